/*
 * essh-relay HOST PORT: one TCP connection from inside a session container's network namespace, for
 * the portal's port forwarding (`ssh -L`). The portal runs it by `docker exec`, so the connection is
 * the app's own: its DNS, its routes, and the host's egress rules for its network apply as to any
 * program in the container. It resolves and connects (10 s at most), then says "connected PID" on
 * stderr (the portal accepts the SSH channel only then), and copies stdin to the socket and the socket
 * to stdout until both directions have ended: the end of stdin becomes a half-close of the socket, and
 * the peer's half-close is said as "eof N" on stderr, N the bytes written to stdout until then (a
 * `docker exec` stream cannot end stdout alone, and it keeps no order between stdout and stderr).
 * A failure to connect is one line on stderr and exit status 2; bad arguments exit 64.
 * essh-relay --stop PID: ends a relay whose SSH channel closed (the portal cannot signal an exec).
 * Statically linked like essh-init, so it works in any image.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 10000
#define BUF_BYTES 65536

static int connect_within(const struct addrinfo *ai, int *err) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    if (errno != EINPROGRESS) {
      *err = errno;
      close(fd);
      return -1;
    }
    struct pollfd p = {fd, POLLOUT, 0};
    int n = poll(&p, 1, CONNECT_TIMEOUT_MS);
    if (n <= 0) {
      *err = n == 0 ? ETIMEDOUT : errno;
      close(fd);
      return -1;
    }
    int so = 0;
    socklen_t len = sizeof so;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &len);
    if (so != 0) {
      *err = so;
      close(fd);
      return -1;
    }
  }
  fcntl(fd, F_SETFL, flags);
  return fd;
}

/* Writes all of buf; 0 on success, -1 when the other side is gone. */
static int write_all(int fd, const char *buf, ssize_t n) {
  while (n > 0) {
    ssize_t w = write(fd, buf, (size_t)n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += w;
    n -= w;
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 3 && strcmp(argv[1], "--stop") == 0) return kill(atoi(argv[2]), SIGTERM) == 0 ? 0 : 1;
  if (argc != 3 || argv[1][0] == '\0' || argv[2][0] == '\0') {
    fprintf(stderr, "usage: essh-relay HOST PORT\n");
    return 64;
  }
  signal(SIGPIPE, SIG_IGN);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  struct addrinfo *list = 0;
  int gai = getaddrinfo(argv[1], argv[2], &hints, &list);
  if (gai != 0) {
    fprintf(stderr, "%s:%s: %s\n", argv[1], argv[2], gai_strerror(gai));
    return 2;
  }
  int fd = -1, err = 0;
  for (const struct addrinfo *ai = list; ai && fd < 0; ai = ai->ai_next) fd = connect_within(ai, &err);
  freeaddrinfo(list);
  if (fd < 0) {
    fprintf(stderr, "%s:%s: %s\n", argv[1], argv[2], strerror(err));
    return 2;
  }
  fprintf(stderr, "connected %d\n", (int)getpid());
  fflush(stderr);

  static char buf[BUF_BYTES];
  /* in_open: stdin still feeds the socket; out_open: the socket still feeds stdout. */
  int in_open = 1, out_open = 1;
  unsigned long long out_bytes = 0;
  while (in_open || out_open) {
    struct pollfd p[2] = {{in_open ? 0 : -1, POLLIN, 0}, {out_open ? fd : -1, POLLIN, 0}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (in_open && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0 || write_all(fd, buf, n) != 0) {
        in_open = 0;
        shutdown(fd, SHUT_WR);
      }
    }
    if (out_open && (p[1].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t n = read(fd, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0 && write_all(1, buf, n) == 0) {
        out_bytes += (unsigned long long)n;
      } else {
        out_open = 0;
        close(1);
        if (n == 0) fprintf(stderr, "eof %llu\n", out_bytes);
        /* The peer reset the connection: nothing more can go to it either. */
        if (n < 0) in_open = 0;
      }
    }
  }
  close(fd);
  return 0;
}
