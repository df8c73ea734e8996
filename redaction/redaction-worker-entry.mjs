// The redaction worker's entry in plain JavaScript: a worker thread does not inherit the loader that runs
// essh's TypeScript, so it registers tsx's before loading the worker itself (redaction/redaction-worker.ts).
import { register } from 'tsx/esm/api';

register();
await import('./redaction-worker.ts');
