export async function runDemo(_opts: { json: boolean; verbose: boolean }): Promise<void> {
  throw new Error('demo: under construction');
}
