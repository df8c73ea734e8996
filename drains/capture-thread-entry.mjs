// The capture thread's entry point: a worker thread starts without the parent's TypeScript loader, so
// it registers tsx itself before loading the TypeScript.
import { register } from 'tsx/esm/api';

register();
await import('./capture-worker.ts');
