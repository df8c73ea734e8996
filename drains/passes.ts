/**
 * Runs `pass` now, every `pollMs`, and whenever `listen`'s news arrives (the poll catches what another
 * process did). Returns what stops both; a pass already running is the caller's to wait for.
 */
export function runPasses(pass: () => void, pollMs: number, listen: (news: () => void) => () => void): () => void {
  const unsubscribe = listen(pass);
  const timer = setInterval(pass, pollMs);
  timer.unref();
  pass();
  return () => {
    unsubscribe();
    clearInterval(timer);
  };
}
