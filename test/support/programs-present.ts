// A vitest setup file: a test file whose programs (and those of the helpers it imports) are not
// installed stops before its first test with one line that names them and how to install them, rather
// than failing somewhere inside with ENOENT or "command not found".
import { beforeAll } from 'vitest';
import type { File, Suite } from '@vitest/runner';
import { missingProgramsMessage } from './requirements.js';

beforeAll(({}, suite: Readonly<Suite | File>) => {
  const message = missingProgramsMessage(suite.file.filepath);
  if (message) throw new Error(message);
});
