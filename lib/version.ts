// essh's version, from its one source: package.json. The CLI, the API (`/healthz`, the OpenAPI
// document's info.version) and anything else that shows a version read it here. esbuild inlines the
// JSON into the CLI bundle (and lists package.json among the bundle's inputs, so a version change
// rebuilds it); tsx and Node load it as a JSON module.
import pkg from '../package.json' with { type: 'json' };

export const VERSION: string = pkg.version;
