/*
 * iamdb_auth: a MariaDB server authentication plugin that behaves like RDS's
 * AWSAuthenticationPlugin, for devstack only.
 *
 * The client is asked for `mysql_clear_password`; the password it sends is an
 * RDS IAM token. The plugin does not judge the token itself: it hands user name
 * and token to devstack's verifier over a Unix socket (system variable
 * iamdb_auth_socket, set with --iamdb-auth-socket=PATH) and accepts the login
 * only on an explicit "accept" verdict. Anything else (reject, verifier down,
 * timeout, malformed answer) refuses the login.
 *
 * Wire format (all lengths unsigned 32-bit big-endian):
 *   request:  "IAM1" | len(user) | user | len(token) | token
 *   response: 'A' (accept) or 'R' (reject), then an optional reason (text, to EOF)
 *
 * The token is never logged: only the user name and the verifier's reason are.
 */
#include <mysql/plugin_auth.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define IAMDB_TIMEOUT_SECONDS 5
#define IAMDB_REASON_MAX 200

static char *verifier_socket_path;

static MYSQL_SYSVAR_STR(socket, verifier_socket_path,
                        PLUGIN_VAR_READONLY | PLUGIN_VAR_RQCMDARG,
                        "Unix socket of the devstack token verifier", NULL, NULL, "");

static struct st_mysql_sys_var *iamdb_sysvars[] = {MYSQL_SYSVAR(socket), NULL};

/* Log one line to the error log (mariadbd's stderr), with non-printables masked. */
static void log_line(const char *user, unsigned int user_len, const char *what, const char *detail)
{
  char clean[IAMDB_REASON_MAX + 1];
  size_t i, n = strlen(detail);
  if (n > IAMDB_REASON_MAX) n = IAMDB_REASON_MAX;
  for (i = 0; i < n; i++) clean[i] = (detail[i] >= 0x20 && detail[i] < 0x7f) ? detail[i] : '?';
  clean[n] = '\0';
  if (user_len > 64) user_len = 64;
  fprintf(stderr, "iamdb_auth: user '%.*s': %s%s%s\n", (int)user_len, user ? user : "", what,
          n ? ": " : "", clean);
  fflush(stderr);
}

static int send_all(int fd, const void *buf, size_t len)
{
  const unsigned char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int send_field(int fd, const void *data, uint32_t len)
{
  unsigned char hdr[4] = {(unsigned char)(len >> 24), (unsigned char)(len >> 16),
                          (unsigned char)(len >> 8), (unsigned char)len};
  return send_all(fd, hdr, 4) || send_all(fd, data, len);
}

/* Connect to the verifier with send/receive timeouts; -1 (errno set) on failure. */
static int connect_verifier(void)
{
  struct sockaddr_un addr;
  struct timeval tv = {IAMDB_TIMEOUT_SECONDS, 0};
  int fd;
  if (!verifier_socket_path || !*verifier_socket_path ||
      strlen(verifier_socket_path) >= sizeof(addr.sun_path)) {
    errno = EINVAL;
    return -1;
  }
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  strcpy(addr.sun_path, verifier_socket_path);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
      connect(fd, (struct sockaddr *)&addr, sizeof(addr))) {
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
  }
  return fd;
}

/* Ask the verifier; 1 only on an explicit accept. */
static int ask_verifier(const char *user, unsigned int user_len, const unsigned char *token,
                        uint32_t token_len)
{
  char reply[IAMDB_REASON_MAX + 2];
  size_t got = 0;
  ssize_t n;
  int fd = connect_verifier();
  if (fd < 0) {
    log_line(user, user_len, "verifier unreachable", strerror(errno));
    return 0;
  }
  if (send_all(fd, "IAM1", 4) || send_field(fd, user, user_len) ||
      send_field(fd, token, token_len)) {
    log_line(user, user_len, "cannot send to verifier", strerror(errno));
    close(fd);
    return 0;
  }
  shutdown(fd, SHUT_WR);
  while (got < sizeof(reply) - 1) {
    n = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EOF, timeout or error: judge what we have */
    got += (size_t)n;
  }
  close(fd);
  reply[got] = '\0';
  if (got >= 1 && reply[0] == 'A') return 1;
  if (got >= 1 && reply[0] == 'R')
    log_line(user, user_len, "rejected", reply + 1);
  else
    log_line(user, user_len, "no valid verdict from verifier", got ? "garbled" : "timeout/EOF");
  return 0;
}

static int iamdb_authenticate(MYSQL_PLUGIN_VIO *vio, MYSQL_SERVER_AUTH_INFO *info)
{
  unsigned char *packet;
  int len;
  /*
   * The server's plugin API (MariaDB 10.11) cannot tell whether this connection
   * uses TLS (MYSQL_PLUGIN_VIO_INFO has only protocol and socket), so REQUIRE SSL
   * is enforced by the server after this function returns. See README.md.
   */
  len = vio->read_packet(vio, &packet); /* triggers the switch to mysql_clear_password */
  if (len < 0) return CR_ERROR;
  info->password_used = PASSWORD_USED_YES;
  if (len > 0 && packet[len - 1] == '\0') len--; /* clients send the password NUL-terminated */
  if (len == 0 || info->user_name == NULL) return CR_ERROR;
  return ask_verifier(info->user_name, info->user_name_length, packet, (uint32_t)len) ? CR_OK
                                                                                      : CR_ERROR;
}

static struct st_mysql_auth iamdb_auth_handler = {
    MYSQL_AUTHENTICATION_INTERFACE_VERSION,
    "mysql_clear_password",
    iamdb_authenticate,
    NULL, /* hash_password: no stored passwords */
    NULL  /* preprocess_hash */
};

maria_declare_plugin(iamdb_auth){
    MYSQL_AUTHENTICATION_PLUGIN,
    &iamdb_auth_handler,
    "iamdb_auth",
    "iamdb devstack",
    "RDS-like IAM token authentication through an external verifier (devstack)",
    PLUGIN_LICENSE_GPL,
    NULL,
    NULL,
    0x0100,
    NULL,
    iamdb_sysvars,
    "1.0",
    MariaDB_PLUGIN_MATURITY_STABLE} maria_declare_plugin_end;
