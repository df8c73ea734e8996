// essh's layering, checked by `npm run lint:layers` and test/layering.test.ts (docs/tests.md).
//
// The folders stand in layers, from the ground up: a folder imports only folders of LOWER layers
// (not its own layer's other folders). The README's map says what each folder is for.
const LAYERS = [
  ['shapes'], // the shapes every part shares (enumerations, requests, answers, the session workflow's names): no essh import
  ['lib'], // infrastructure: config, db and migrations, log, docker, temporal, metrics, secrets, ssh keys, handover
  ['domain', 'journal', 'redaction'], // essh's rules (plans, grants, caps, the Operation record); the session journal; redaction
  ['host'], // one Docker host's parts: containers, session network, egress, warm pool, agent, registry
  ['activities'], // the session workflow's activities
  ['workflows'], // the session workflow (deterministic; it proxies the activities by their types)
  ['services'], // the API's services: sessions, admin, audit, hosts, placement
  ['portal', 'drains', 'worker'], // the SSH portal; log drains; the Temporal workers and their reconcilers
  ['recordings'], // recordings, and the hosts' internal endpoint that serves them
  ['api'], // the HTTP API
  ['cli', 'console'], // the clients: the CLI and the web console (only shapes/ and lib/: see below)
  ['server'], // process entries and bootstrap: roles, runtime, the dev Temporal server, the build
  ['bench'], // benchmarks
];

// The imports that run up against the layers: at most 5, each with its reason. A pair is a file and the
// files it may import (regular expressions over paths from the repository's root).
const UPWARD = [
  // None today. An entry reads: { from: '^host/x\\.ts$', to: '^portal/y\\.ts$', reason: 'why it cannot be the other way' }
];
if (UPWARD.length > 5) throw new Error(`.dependency-cruiser.cjs: ${UPWARD.length} upward imports; at most 5 are allowed`);

const folders = (names) => `^(${names.join('|')})/`;
const above = (i) => LAYERS.slice(i + 1).flat();
const peers = (i, name) => LAYERS[i].filter((n) => n !== name);

const layerRules = LAYERS.flatMap((layer, i) => layer.flatMap((name) => {
  const forbidden = [...peers(i, name), ...above(i)];
  if (!forbidden.length) return [];
  const exceptions = UPWARD.filter((u) => new RegExp(`^\\^${name}/`).test(u.from));
  const comment = `${name}/ imports only the layers below it: ${LAYERS.slice(0, i).flat().join(', ') || 'nothing'}`;
  return [
    {
      name: `layer-${name}`, severity: 'error', comment,
      from: { path: `^${name}/`, ...(exceptions.length ? { pathNot: exceptions.map((u) => u.from).join('|') } : {}) },
      to: { path: folders(forbidden) },
    },
    ...exceptions.map((u, n) => ({
      name: `layer-${name}-except-${n + 1}`, severity: 'error', comment: `${comment}; upward exception: ${u.reason}`,
      from: { path: u.from },
      to: { path: folders(forbidden), pathNot: u.to },
    })),
  ];
}));

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'every-folder-has-a-layer', severity: 'error',
      comment: 'a new folder takes its place in LAYERS above, so that its imports are checked',
      from: { pathNot: `${folders([...LAYERS.flat(), 'bin', 'scripts', 'deploy', 'docs'])}|^[^/]+$` },
      to: {},
    },
    {
      name: 'clients-import-only-shapes-and-lib', severity: 'error',
      comment: 'the CLI and the console are clients of the API: they share its shapes, never the server\'s code',
      from: { path: '^(cli|console)/' },
      to: { path: folders(LAYERS.flat().filter((n) => !['cli', 'console', 'shapes', 'lib'].includes(n))) },
    },
    {
      name: 'workflow-imports-activities-as-types-only', severity: 'error',
      comment: 'workflow code runs in Temporal\'s sandbox: what it takes from the activities must be types (import type)',
      from: { path: '^workflows/' },
      to: { path: '^activities/', dependencyTypesNot: ['type-only'] },
    },
    {
      name: 'no-circular', severity: 'error',
      comment: 'no two files import each other, directly or through others',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-circular-folders', severity: 'error', scope: 'folder',
      comment: 'no two top-level folders import each other, directly or through others',
      from: { path: '^[^/]+$' },
      to: { path: '^[^/]+$', circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|dist|test|\\.tools)/' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.mjs', '.js', '.json'] },
  },
};
