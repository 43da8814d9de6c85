# Translates UCI configuration into preserve-dscp's watch configuration (JSON
# on stdout). Sourced by the init script; needs /lib/functions.sh (config_*)
# and /lib/functions/network.sh (network_get_device).
. "${IPKG_INSTROOT:-}/lib/functions.sh"
. "${IPKG_INSTROOT:-}/lib/functions/network.sh"

# Device of a logical interface (wan -> eth0.2), or the name itself.
preserve_dscp_device() {
	local dev
	network_get_device dev "$1" 2>/dev/null && [ -n "$dev" ] && { echo "$dev"; return; }
	echo "$1"
}

_pd_rules=""
_pd_add_rule() { # match uplinks-json carrier
	_pd_rules="${_pd_rules:+$_pd_rules,
}    { \"match\": \"$1\", \"uplinks\": $2, \"carrier\": \"$3\" }"
}

_pd_uplinks_json() { # list of logical names/devices -> JSON array, or "auto"
	[ -z "$1" ] && { echo '"auto"'; return; }
	local out="" u
	for u in $1; do out="${out:+$out, }\"$(preserve_dscp_device "$u")\""; done
	echo "[$out]"
}

_pd_network_section() {
	local proto enabled uplink
	config_get proto "$1" proto
	[ "$proto" = wireguard ] || return 0
	config_get_bool enabled "$1" preserve_dscp 0
	[ "$enabled" = 1 ] || return 0
	config_get uplink "$1" preserve_dscp_uplink
	_pd_add_rule "$1" "$(_pd_uplinks_json "$uplink")" auto
}

_pd_tunnel_section() {
	local match uplink carrier
	config_get match "$1" match
	[ -n "$match" ] || return 0
	config_get uplink "$1" uplink
	config_get carrier "$1" carrier auto
	_pd_add_rule "$match" "$(_pd_uplinks_json "$uplink")" "$carrier"
}

preserve_dscp_uci2json() {
	local policy map_size
	_pd_rules=""
	config_load network
	config_foreach _pd_network_section interface
	config_load preserve-dscp
	config_foreach _pd_tunnel_section tunnel
	config_get policy global policy all
	config_get map_size global map_size 16384
	[ -n "$_pd_rules" ] || { echo "preserve-dscp: no tunnels configured" >&2; return 1; }
	printf '{\n  "tunnels": [\n%s\n  ],\n  "policy": "%s",\n  "mapSize": %s\n}\n' "$_pd_rules" "$policy" "$map_size"
}
