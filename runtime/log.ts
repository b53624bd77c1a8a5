/** The process logger. Every line that concerns a case carries `caseId`; see `caseLogger`. */
import { pino, type Logger } from 'pino';

export const log: Logger = pino({
  level: process.env.SANFANG_LOG_LEVEL ?? (process.env.VITEST ? 'silent' : 'info'),
  base: { service: 'sanfang' },
  // Defence in depth: these keys must never be logged in clear, whatever object reaches the logger.
  redact: { paths: ['phone', '*.phone', 'address', '*.address'], censor: '[redacted]' },
});

export function caseLogger(caseId: string): Logger {
  return log.child({ caseId });
}
