import pino from 'pino';

export type Logger = pino.Logger;

/**
 * The project's own log (pino: structured JSON, fast, with path-based redaction). Tokens, passwords and
 * session output must never reach it; the redaction is a second line of defence behind not logging them.
 */
export function createLogger(level: string = 'info', destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'essh' },
      redact: {
        paths: ['token', '*.token', 'password', '*.password', 'authorization', '*.authorization', 'headers.authorization', 'env', '*.env'],
        censor: '[redacted]',
      },
    },
    destination,
  );
}
