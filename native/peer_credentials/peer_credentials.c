// The credentials of the process at the other end of a connected Unix socket, as the kernel
// recorded them when it connected: Node has no API for SO_PEERCRED, so the SPIFFE Workload API
// (src/api/ca/workload.ts) asks here, through src/common/peer_credentials.ts.
//
// peerCredentials(fd) -> { pid, uid, gid }. On Linux these come from getsockopt(SO_PEERCRED);
// elsewhere from getpeereid(), which knows no pid (pid is then -1). A failure throws an Error
// whose code is the errno name (EBADF, ENOTSOCK, ENOTCONN...) and whose message says what failed.

#ifdef __linux__
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>
#include <node_api.h>

#define CHECK(env, call)                                                  \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error((env), "EADDON", "peer_credentials: " #call " failed"); \
      return NULL;                                                        \
    }                                                                     \
  } while (0)

static napi_value set_int(napi_env env, napi_value obj, const char* name, int64_t value) {
  napi_value v;
  CHECK(env, napi_create_int64(env, value, &v));
  CHECK(env, napi_set_named_property(env, obj, name, v));
  return obj;
}

static const char* errno_name(int err) {
  switch (err) {
    case EBADF: return "EBADF";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOTCONN: return "ENOTCONN";
    case EINVAL: return "EINVAL";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    default: return "EPEERCRED";
  }
}

static napi_value peer_credentials(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_valuetype type = napi_undefined;
  if (argc >= 1) CHECK(env, napi_typeof(env, argv[0], &type));
  int32_t fd = -1;
  if (type != napi_number || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EINVAL", "peerCredentials(fd): fd must be a non-negative integer file descriptor");
    return NULL;
  }

  int64_t pid = -1, uid, gid;
#ifdef SO_PEERCRED
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
#else
  uid_t euid;
  gid_t egid;
  if (getpeereid(fd, &euid, &egid) != 0) {
#endif
    int err = errno;
    char message[160];
    snprintf(message, sizeof message, "cannot read the peer credentials of fd %d: %s", (int)fd, strerror(err));
    napi_throw_error(env, errno_name(err), message);
    return NULL;
  }
#ifdef SO_PEERCRED
  pid = cred.pid;
  uid = cred.uid;
  gid = cred.gid;
#else
  uid = euid;
  gid = egid;
#endif

  napi_value out;
  CHECK(env, napi_create_object(env, &out));
  if (set_int(env, out, "pid", pid) == NULL) return NULL;
  if (set_int(env, out, "uid", uid) == NULL) return NULL;
  if (set_int(env, out, "gid", gid) == NULL) return NULL;
  return out;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  CHECK(env, napi_create_function(env, "peerCredentials", NAPI_AUTO_LENGTH, peer_credentials, NULL, &fn));
  CHECK(env, napi_set_named_property(env, exports, "peerCredentials", fn));
  return exports;
}
