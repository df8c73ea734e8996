/*
 * essh-init: the main process of every session container. It only holds the container open: the
 * session's program runs beside it by `docker exec` when the client attaches. It reaps any orphan
 * that ends up its child, and exits at once on SIGTERM/SIGINT/SIGHUP/SIGQUIT so that stopping the
 * container never waits out a grace period. Statically linked and mounted read-only from the host,
 * it works in any image, with or without a shell or `sleep`.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_BLOCK, &all, 0);
  for (;;) {
    int sig;
    if (sigwait(&all, &sig) != 0) continue;
    if (sig == SIGCHLD) {
      while (waitpid(-1, 0, WNOHANG) > 0) {
      }
    } else if (sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT) {
      _exit(0);
    }
  }
}
