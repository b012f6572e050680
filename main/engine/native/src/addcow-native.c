/*
 * addcow-native: the few system calls Node does not expose, for the add-cow engine.
 *
 *   punchHole(fd, offset, length)            fallocate(PUNCH_HOLE | KEEP_SIZE)
 *   dataExtents(fd, start, end, max)         lseek(SEEK_DATA / SEEK_HOLE) walk -> [s0, e0, s1, e1, ...]
 *   lock(fd, held, unshared)                 QEMU-compatible open-file-description byte locks
 *   unlock(fd)                               drop those locks
 *   copyFileRange(in, inOff, out, outOff, n) copy_file_range on the thread pool -> Promise<bytes>
 *   punchHoleAsync(fd, offset, length)       punchHole on the thread pool -> Promise<void>
 *   readBatch(target, pieces)                many preads in one thread-pool job -> Promise<void>
 *   readCached(target, pieces, budget)       the same preads now, from the page cache only -> pieces done
 *   sendParts(socket, items, buffers, waitMs) buffers, zeros and file ranges (sendfile) to a
 *                                            non-blocking socket on the thread pool -> bytes sent
 *   waitWritable(socket)                     resolves once the socket takes bytes again (uv_poll)
 *   dupSocket(fd) / shutdownSocket(fd)       a descriptor of its own for sendParts, and its wake-up
 *   features                                 which of the above this build supports
 *
 * Offsets and lengths are JavaScript numbers (safe integers, < 2^53). System errors are thrown
 * (or rejected) as Error objects whose `code` is the errno name ("EOPNOTSUPP", ...), so the
 * TypeScript loader can turn them into EngineErrors naming the file.
 *
 * Written against the raw C API (node_api.h), NAPI_VERSION 8: no C++ and no node-addon-api.
 */
#include <node_api.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <poll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#ifdef __linux__
#include <linux/falloc.h>
#include <linux/magic.h>
#include <sys/sendfile.h>
#include <sys/vfs.h>
#endif

/* QEMU's file-posix lock bytes: byte 100 + i means "holds permission i", byte 200 + i means
 * "does not let others take permission i". Permissions: 0 consistent read, 1 write,
 * 2 write unchanged, 3 resize. */
#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200
#define LOCK_PERM_COUNT 4

static const char *const PERM_NAMES[LOCK_PERM_COUNT] = {"consistent read", "write", "write unchanged", "resize"};

#define CALL(env, call)                                                                            \
  do {                                                                                             \
    if ((call) != napi_ok) {                                                                       \
      throw_last(env);                                                                             \
      return NULL;                                                                                 \
    }                                                                                              \
  } while (0)

static void throw_last(napi_env env) {
  const napi_extended_error_info *info = NULL;
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  napi_get_last_error_info(env, &info);
  napi_throw_error(env, "EINVAL", info && info->error_message ? info->error_message : "N-API call failed");
}

static const char *errno_name(int error) {
  switch (error) {
    case EPERM: return "EPERM";
    case ENOENT: return "ENOENT";
    case EINTR: return "EINTR";
    case EIO: return "EIO";
    case EBADF: return "EBADF";
    case EAGAIN: return "EAGAIN";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EXDEV: return "EXDEV";
    case EISDIR: return "EISDIR";
    case EINVAL: return "EINVAL";
    case EFBIG: return "EFBIG";
    case ENOSPC: return "ENOSPC";
    case ESPIPE: return "ESPIPE";
    case EROFS: return "EROFS";
    case ENOSYS: return "ENOSYS";
    case ENXIO: return "ENXIO";
    case EOVERFLOW: return "EOVERFLOW";
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP: return "EOPNOTSUPP";
#endif
    case ENOTSUP: return "ENOTSUP";
    case EPIPE: return "EPIPE";
    case ECONNRESET: return "ECONNRESET";
    case ENOTCONN: return "ENOTCONN";
    case ENOTSOCK: return "ENOTSOCK";
    default: return "EUNKNOWN";
  }
}

static napi_value make_errno_error(napi_env env, int error, const char *syscall) {
  char text[256];
  napi_value code, message, result;
  snprintf(text, sizeof text, "%s failed: %s", syscall, strerror(error));
  napi_create_string_utf8(env, errno_name(error), NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &result);
  napi_value number;
  napi_create_int32(env, error, &number);
  napi_set_named_property(env, result, "errno", number);
  return result;
}

static void throw_errno(napi_env env, int error, const char *syscall) {
  napi_throw(env, make_errno_error(env, error, syscall));
}

/* Read argument `index` as a non-negative safe integer; throws and returns false otherwise. */
static bool get_offset(napi_env env, napi_value value, const char *what, int64_t *out) {
  double number;
  if (napi_get_value_double(env, value, &number) != napi_ok || number != number || number < 0 ||
      number > 9007199254740991.0 || (double)(int64_t)number != number) {
    char text[128];
    snprintf(text, sizeof text, "%s must be a non-negative safe integer", what);
    napi_throw_range_error(env, "EINVAL", text);
    return false;
  }
  *out = (int64_t)number;
  return true;
}

static bool get_fd(napi_env env, napi_value value, int *out) {
  int32_t fd;
  if (napi_get_value_int32(env, value, &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, "EBADF", "fd must be a non-negative integer");
    return false;
  }
  *out = fd;
  return true;
}

static bool get_args(napi_env env, napi_callback_info info, size_t expected, napi_value *argv) {
  size_t argc = expected;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < expected) {
    napi_throw_type_error(env, "EINVAL", "missing arguments");
    return false;
  }
  return true;
}

/* punchHole(fd, offset, length): deallocate the range; it reads as zeros afterwards. */
static napi_value punch_hole(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  int64_t offset, length;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], &fd) ||
      !get_offset(env, argv[1], "offset", &offset) || !get_offset(env, argv[2], "length", &length)) {
    return NULL;
  }
  if (length == 0) return NULL;
#if defined(__linux__) && defined(FALLOC_FL_PUNCH_HOLE)
  int result;
  do {
    result = fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)offset, (off_t)length);
  } while (result != 0 && errno == EINTR);
  if (result != 0) throw_errno(env, errno, "fallocate(PUNCH_HOLE)");
#else
  throw_errno(env, ENOTSUP, "fallocate(PUNCH_HOLE)");
#endif
  return NULL;
}

/* dataExtents(fd, start, end, max): up to `max` data extents [s, e) inside [start, end), as a
 * flat array. Fewer than `max` extents means the walk reached `end`. */
static napi_value data_extents(napi_env env, napi_callback_info info) {
  napi_value argv[4], result;
  int fd;
  int64_t start, end, max;
  if (!get_args(env, info, 4, argv) || !get_fd(env, argv[0], &fd) ||
      !get_offset(env, argv[1], "start", &start) || !get_offset(env, argv[2], "end", &end) ||
      !get_offset(env, argv[3], "max", &max)) {
    return NULL;
  }
  CALL(env, napi_create_array(env, &result));
#if defined(SEEK_DATA) && defined(SEEK_HOLE)
  int64_t position = start;
  uint32_t count = 0;
  while (position < end && (int64_t)(count / 2) < max) {
    off_t data = lseek(fd, (off_t)position, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;
      throw_errno(env, errno, "lseek(SEEK_DATA)");
      return NULL;
    }
    if ((int64_t)data >= end) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    if (hole < 0) {
      throw_errno(env, errno, "lseek(SEEK_HOLE)");
      return NULL;
    }
    int64_t stop = (int64_t)hole < end ? (int64_t)hole : end;
    if (stop <= (int64_t)data) break;
    napi_value a, b;
    CALL(env, napi_create_double(env, (double)data, &a));
    CALL(env, napi_create_double(env, (double)stop, &b));
    CALL(env, napi_set_element(env, result, count++, a));
    CALL(env, napi_set_element(env, result, count++, b));
    position = stop;
  }
#else
  (void)start;
  (void)end;
  (void)max;
  throw_errno(env, ENOTSUP, "lseek(SEEK_DATA)");
  return NULL;
#endif
  return result;
}

#ifdef F_OFD_SETLK
static int set_byte(int fd, off_t offset, off_t length, short type) {
  struct flock lock;
  memset(&lock, 0, sizeof lock);
  lock.l_type = type;
  lock.l_whence = SEEK_SET;
  lock.l_start = offset;
  lock.l_len = length;
  int result;
  do {
    result = fcntl(fd, F_OFD_SETLK, &lock);
  } while (result != 0 && errno == EINTR);
  return result == 0 ? 0 : errno;
}

/* 1 if another open file description holds a lock on the byte, 0 if not, -errno on failure. */
static int test_byte(int fd, off_t offset) {
  struct flock lock;
  memset(&lock, 0, sizeof lock);
  lock.l_type = F_WRLCK;
  lock.l_whence = SEEK_SET;
  lock.l_start = offset;
  lock.l_len = 1;
  if (fcntl(fd, F_OFD_GETLK, &lock) != 0) return -errno;
  return lock.l_type == F_UNLCK ? 0 : 1;
}
#endif

/*
 * lock(fd, held, unshared): take QEMU's lock bytes for the permission bits `held` (what this
 * process does with the file) and `unshared` (what it forbids others), then check that no one
 * else conflicts. Returns null on success, or a string naming the conflicting permission (the
 * locks are dropped again). Without OFD locks, falls back to flock (shared or exclusive).
 */
static napi_value lock_file(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  int fd;
  int32_t held, unshared;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], &fd)) return NULL;
  CALL(env, napi_get_value_int32(env, argv[1], &held));
  CALL(env, napi_get_value_int32(env, argv[2], &unshared));
#ifdef F_OFD_SETLK
  for (int i = 0; i < LOCK_PERM_COUNT; i++) {
    int bit = 1 << i;
    int error = 0;
    if (held & bit) error = set_byte(fd, LOCK_PERM_BASE + i, 1, F_RDLCK);
    if (!error && (unshared & bit)) error = set_byte(fd, LOCK_SHARED_BASE + i, 1, F_RDLCK);
    if (error) {
      set_byte(fd, LOCK_PERM_BASE, LOCK_SHARED_BASE + LOCK_PERM_COUNT - LOCK_PERM_BASE, F_UNLCK);
      if (error == EAGAIN || error == EACCES) {
        CALL(env, napi_create_string_utf8(env, PERM_NAMES[i], NAPI_AUTO_LENGTH, &result));
        return result;
      }
      throw_errno(env, error, "fcntl(F_OFD_SETLK)");
      return NULL;
    }
  }
  for (int i = 0; i < LOCK_PERM_COUNT; i++) {
    int bit = 1 << i;
    char text[64];
    int conflict = 0;
    if (held & bit) {
      conflict = test_byte(fd, LOCK_SHARED_BASE + i);
      snprintf(text, sizeof text, "%s", PERM_NAMES[i]);
    }
    if (conflict == 0 && (unshared & bit)) {
      conflict = test_byte(fd, LOCK_PERM_BASE + i);
      snprintf(text, sizeof text, "shared %s", PERM_NAMES[i]);
    }
    if (conflict != 0) {
      set_byte(fd, LOCK_PERM_BASE, LOCK_SHARED_BASE + LOCK_PERM_COUNT - LOCK_PERM_BASE, F_UNLCK);
      if (conflict < 0) {
        throw_errno(env, -conflict, "fcntl(F_OFD_GETLK)");
        return NULL;
      }
      CALL(env, napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &result));
      return result;
    }
  }
#else
  int operation = ((held | unshared) & 2 ? LOCK_EX : LOCK_SH) | LOCK_NB;
  (void)unshared;
  if (flock(fd, operation) != 0) {
    if (errno == EWOULDBLOCK) {
      CALL(env, napi_create_string_utf8(env, "flock", NAPI_AUTO_LENGTH, &result));
      return result;
    }
    throw_errno(env, errno, "flock");
    return NULL;
  }
#endif
  CALL(env, napi_get_null(env, &result));
  return result;
}

/* unlock(fd): drop the locks lock() took on this file description. */
static napi_value unlock_file(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  int fd;
  if (!get_args(env, info, 1, argv) || !get_fd(env, argv[0], &fd)) return NULL;
#ifdef F_OFD_SETLK
  int error = set_byte(fd, LOCK_PERM_BASE, LOCK_SHARED_BASE + LOCK_PERM_COUNT - LOCK_PERM_BASE, F_UNLCK);
  if (error) throw_errno(env, error, "fcntl(F_OFD_SETLK)");
#else
  if (flock(fd, LOCK_UN) != 0) throw_errno(env, errno, "flock");
#endif
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  int punch; /* 1: punch a hole in `out` at out_offset; 0: copy */
  int in, out;
  int64_t in_offset, out_offset, length, copied;
  int error;
} CopyJob;

static void copy_execute(napi_env env, void *data) {
  (void)env;
  CopyJob *job = data;
  if (job->punch) {
#if defined(__linux__) && defined(FALLOC_FL_PUNCH_HOLE)
    int result;
    do {
      result = fallocate(job->out, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)job->out_offset, (off_t)job->length);
    } while (result != 0 && errno == EINTR);
    if (result != 0) job->error = errno;
#else
    job->error = ENOTSUP;
#endif
    return;
  }
#ifdef __linux__
  loff_t in_offset = job->in_offset, out_offset = job->out_offset;
  while (job->copied < job->length) {
    size_t chunk = (size_t)(job->length - job->copied);
    if (chunk > ((size_t)1 << 30)) chunk = (size_t)1 << 30;
    ssize_t done = copy_file_range(job->in, &in_offset, job->out, &out_offset, chunk, 0);
    if (done < 0) {
      if (errno == EINTR) continue;
      job->error = errno;
      return;
    }
    if (done == 0) return;
    job->copied += done;
  }
#else
  job->error = ENOSYS;
#endif
}

static void copy_complete(napi_env env, napi_status status, void *data) {
  CopyJob *job = data;
  napi_value value;
  if (status != napi_ok) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, ECANCELED, job->punch ? "fallocate(PUNCH_HOLE)" : "copy_file_range"));
  } else if (job->error) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, job->error, job->punch ? "fallocate(PUNCH_HOLE)" : "copy_file_range"));
  } else {
    napi_create_double(env, (double)job->copied, &value);
    napi_resolve_deferred(env, job->deferred, value);
  }
  napi_delete_async_work(env, job->work);
  free(job);
}

/* Queue a copy of `spec` (a copy or a punch) on the thread pool; returns its promise, or NULL
 * with an exception pending. `label` names the work for async hooks. */
static napi_value queue_copy_job(napi_env env, const CopyJob *spec, const char *label) {
  napi_value promise, name;
  CopyJob *job = malloc(sizeof *job);
  if (!job) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  *job = *spec;
  if (napi_create_promise(env, &job->deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, label, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, copy_execute, copy_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    free(job);
    throw_last(env);
    return NULL;
  }
  return promise;
}

/* copyFileRange(in, inOffset, out, outOffset, length): copy in the kernel, off the main thread.
 * Resolves with the bytes copied (fewer than asked only at the input's end of file). */
static napi_value copy_file_range_js(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  int in, out;
  int64_t in_offset, out_offset, length;
  if (!get_args(env, info, 5, argv) || !get_fd(env, argv[0], &in) ||
      !get_offset(env, argv[1], "input offset", &in_offset) || !get_fd(env, argv[2], &out) ||
      !get_offset(env, argv[3], "output offset", &out_offset) ||
      !get_offset(env, argv[4], "length", &length)) {
    return NULL;
  }
  CopyJob spec = {.in = in, .out = out, .in_offset = in_offset, .out_offset = out_offset, .length = length};
  return queue_copy_job(env, &spec, "addcow.copyFileRange");
}

/* punchHoleAsync(fd, offset, length): punchHole on the thread pool; the caller keeps `fd` open
 * until the promise settles. */
static napi_value punch_hole_async(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  int fd;
  int64_t offset, length;
  if (!get_args(env, info, 3, argv) || !get_fd(env, argv[0], &fd) ||
      !get_offset(env, argv[1], "offset", &offset) || !get_offset(env, argv[2], "length", &length)) {
    return NULL;
  }
  CopyJob spec = {.punch = 1, .out = fd, .out_offset = offset, .length = length};
  return queue_copy_job(env, &spec, "addcow.punchHole");
}

/* readBatch(target, pieces): the pieces of one guest read, in one thread-pool job.
 *
 * `pieces` is a Float64Array of quadruples [fd, position, targetOffset, length]; each piece is
 * pread into target[targetOffset .. targetOffset + length), with zeros past the file's end. A
 * read split over many runs of clusters (image file, base, image file, ...) then costs one
 * thread-pool round trip instead of one per run. The target stays referenced until the job ends.
 */
#define READ_BATCH_MAX_PIECES 65536

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref target_ref;
  uint8_t *target;
  size_t target_length;
  size_t count;
  int64_t *pieces; /* count * 4 */
  int write_fd;     /* -1: read only; else the whole target is written here after the reads */
  int64_t write_position;
  int error;
  const char *failed; /* the system call that failed */
} ReadBatchJob;

/* One [fd, position, targetOffset, length] quadruple from JavaScript, checked against the
 * target; throws a RangeError and returns false when it is not a valid piece. */
static bool get_piece(napi_env env, const double *raw, size_t target_length, int64_t *out) {
  double fd = raw[0], position = raw[1], offset = raw[2], length = raw[3];
  bool valid = fd >= 0 && fd <= 2147483647.0 && (double)(int64_t)fd == fd && position >= 0 &&
               position <= 9007199254740991.0 && (double)(int64_t)position == position && offset >= 0 &&
               length >= 0 && (double)(int64_t)offset == offset && (double)(int64_t)length == length &&
               offset + length <= (double)target_length;
  if (!valid) {
    napi_throw_range_error(env, "EINVAL", "a piece lies outside the target or has an invalid fd or position");
    return false;
  }
  out[0] = (int64_t)fd;
  out[1] = (int64_t)position;
  out[2] = (int64_t)offset;
  out[3] = (int64_t)length;
  return true;
}

/* Get the target Uint8Array and the pieces Float64Array of readBatch / readCached. */
static bool get_batch_args(napi_env env, napi_value *argv, uint8_t **target, size_t *target_length,
                           const double **raw, size_t *count) {
  napi_value array_buffer;
  napi_typedarray_type type;
  size_t byte_offset;
  void *target_data, *pieces_data;
  if (napi_get_typedarray_info(env, argv[0], &type, target_length, &target_data, &array_buffer, &byte_offset) != napi_ok ||
      type != napi_uint8_array) {
    napi_throw_type_error(env, "EINVAL", "target must be a Uint8Array");
    return false;
  }
  if (napi_get_typedarray_info(env, argv[1], &type, count, &pieces_data, &array_buffer, &byte_offset) != napi_ok ||
      type != napi_float64_array || *count % 4 != 0 || *count / 4 > READ_BATCH_MAX_PIECES) {
    napi_throw_type_error(env, "EINVAL", "pieces must be a Float64Array of at most 65536 [fd, position, offset, length] quadruples");
    return false;
  }
  *count /= 4;
  *target = target_data;
  *raw = pieces_data;
  return true;
}

/* Queue `execute`/`complete` on the thread pool for `job`, holding a reference to `keep` (the
 * JavaScript value whose memory the job uses) until `complete` deletes it. Returns the job's
 * promise, or NULL with an exception pending (nothing queued, nothing held: free the job). */
static napi_value queue_job(napi_env env, napi_value keep, const char *label, napi_async_execute_callback execute,
                            napi_async_complete_callback complete, void *job, napi_ref *kept,
                            napi_deferred *deferred, napi_async_work *work) {
  napi_value promise, name;
  *kept = NULL;
  *work = NULL;
  if (napi_create_reference(env, keep, 1, kept) != napi_ok || napi_create_promise(env, deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, label, NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, job, work) != napi_ok ||
      napi_queue_async_work(env, *work) != napi_ok) {
    if (*kept) napi_delete_reference(env, *kept);
    if (*work) napi_delete_async_work(env, *work);
    throw_last(env);
    return NULL;
  }
  return promise;
}

static void read_batch_execute(napi_env env, void *data) {
  (void)env;
  ReadBatchJob *job = data;
  for (size_t i = 0; i < job->count && !job->error; i++) {
    int fd = (int)job->pieces[i * 4];
    int64_t position = job->pieces[i * 4 + 1];
    uint8_t *out = job->target + job->pieces[i * 4 + 2];
    size_t length = (size_t)job->pieces[i * 4 + 3];
    size_t done = 0;
    while (done < length) {
      ssize_t got = pread(fd, out + done, length - done, (off_t)(position + (int64_t)done));
      if (got < 0) {
        if (errno == EINTR) continue;
        job->error = errno;
        job->failed = "pread";
        break;
      }
      if (got == 0) {
        memset(out + done, 0, length - done);
        break;
      }
      done += (size_t)got;
    }
  }
  if (job->write_fd < 0 || job->error) return;
  size_t written = 0;
  while (written < job->target_length) {
    ssize_t put = pwrite(job->write_fd, job->target + written, job->target_length - written,
                         (off_t)(job->write_position + (int64_t)written));
    if (put < 0) {
      if (errno == EINTR) continue;
      job->error = errno;
      job->failed = "pwrite";
      return;
    }
    written += (size_t)put;
  }
}

static void read_batch_complete(napi_env env, napi_status status, void *data) {
  ReadBatchJob *job = data;
  if (status != napi_ok) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, ECANCELED, "pread"));
  } else if (job->error) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, job->error, job->failed));
  } else {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, job->deferred, undefined);
  }
  napi_delete_reference(env, job->target_ref);
  napi_delete_async_work(env, job->work);
  free(job->pieces);
  free(job);
}

/* readBatch(target, pieces[, writeFd, writePosition]): with a write target, the job then writes
 * all of `target` to writeFd at writePosition once every piece was read: a copy-on-write fill
 * (the parts of a cluster read from the base around the guest's data, which the caller already
 * put in `target`, then the whole cluster written) costs one thread-pool job, with no copy of
 * the base's bytes on the main thread. */
static napi_value read_batch(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  uint8_t *target_data;
  size_t target_length, count;
  const double *raw;
  size_t argc = 4;
  int write_fd = -1;
  int64_t write_position = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 2) {
    napi_throw_type_error(env, "EINVAL", "missing arguments");
    return NULL;
  }
  if (!get_batch_args(env, argv, &target_data, &target_length, &raw, &count)) return NULL;
  if (argc >= 4) {
    napi_valuetype type;
    napi_typeof(env, argv[2], &type);
    if (type != napi_undefined &&
        (!get_fd(env, argv[2], &write_fd) || !get_offset(env, argv[3], "write position", &write_position))) {
      return NULL;
    }
  }
  int64_t *pieces = malloc((count ? count : 1) * 4 * sizeof *pieces);
  if (!pieces) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    if (!get_piece(env, raw + i * 4, target_length, pieces + i * 4)) {
      free(pieces);
      return NULL;
    }
  }
  ReadBatchJob *job = calloc(1, sizeof *job);
  if (!job) {
    free(pieces);
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  job->target = target_data;
  job->target_length = target_length;
  job->count = count;
  job->pieces = pieces;
  job->write_fd = write_fd;
  job->write_position = write_position;
  job->failed = "pread";
  napi_value promise = queue_job(env, argv[0], "addcow.readBatch", read_batch_execute, read_batch_complete, job,
                                 &job->target_ref, &job->deferred, &job->work);
  if (!promise) {
    free(pieces);
    free(job);
  }
  return promise;
}

/* readCached(target, pieces, budget): the synchronous fast path of a read.
 *
 * Reads the pieces in order with preadv2(RWF_NOWAIT), which copies from the page cache and
 * fails with EAGAIN instead of waiting for the disk, and returns how many pieces it completed
 * (zeros past a file's end count as complete). It stops at the first piece whose data is not
 * all cached, or that the filesystem will not read without waiting (EOPNOTSUPP; a filesystem
 * held in memory, tmpfs or ramfs, is read with a plain pread then: a copy, never a wait), or once
 * `budget` bytes are done, so the event loop never waits on a disk and never copies much more
 * than `budget` bytes at a time; the caller reads the remaining pieces on the thread pool.
 * A piece it stopped in may be partly filled; the caller reads it again whole. Real I/O errors
 * also just stop it: the thread-pool read meets them again and reports them. */
#if defined(__linux__) && defined(RWF_NOWAIT)
/* Whether `fd` lies on a filesystem held in memory (tmpfs, ramfs: /dev/shm, and /tmp on many
 * systems), where RWF_NOWAIT is refused with EOPNOTSUPP but a plain read is a memory copy that
 * never waits on a disk. */
static bool in_memory_fs(int fd) {
  struct statfs info;
  if (fstatfs(fd, &info) != 0) return false;
  return info.f_type == TMPFS_MAGIC || info.f_type == RAMFS_MAGIC;
}
#endif

static napi_value read_cached(napi_env env, napi_callback_info info) {
  napi_value argv[3], result;
  uint8_t *target;
  size_t target_length, count, completed = 0;
  const double *raw;
  int64_t budget;
  if (!get_args(env, info, 3, argv)) return NULL;
  if (!get_batch_args(env, argv, &target, &target_length, &raw, &count)) return NULL;
  if (!get_offset(env, argv[2], "budget", &budget)) return NULL;
#if defined(__linux__) && defined(RWF_NOWAIT)
  int64_t spent = 0;
  /* The fd this call found on a filesystem held in memory: its pieces skip RWF_NOWAIT. */
  int memory_fd = -1;
  for (; completed < count && spent < budget; completed++) {
    int64_t piece[4];
    if (!get_piece(env, raw + completed * 4, target_length, piece)) return NULL;
    uint8_t *out = target + piece[2];
    size_t length = (size_t)piece[3], done = 0;
    int fd = (int)piece[0];
    int flags = fd == memory_fd ? 0 : RWF_NOWAIT;
    while (done < length) {
      struct iovec vector = {out + done, length - done};
      ssize_t got = preadv2(fd, &vector, 1, (off_t)(piece[1] + (int64_t)done), flags);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0 && errno == EOPNOTSUPP && flags != 0 && in_memory_fs(fd)) {
        memory_fd = fd;
        flags = 0;
        continue;
      }
      if (got < 0) break;
      if (got == 0) {
        memset(out + done, 0, length - done);
        done = length;
        break;
      }
      done += (size_t)got;
    }
    if (done < length) break;
    spent += piece[3];
  }
#else
  (void)raw;
  (void)target;
  (void)target_length;
  (void)budget;
#endif
  napi_create_uint32(env, (uint32_t)completed, &result);
  return result;
}

/* ---- zero-copy sends --------------------------------------------------------------------
 *
 * sendParts(socket, items, buffers, waitMs): write a sequence of parts to a connected,
 * non-blocking stream socket in one thread-pool job: `items` is a Float64Array of
 * [kind, a, b] triples, in order:
 *   kind >= 0   b bytes of file `kind` at position a, with sendfile: the page cache's pages go
 *               to the socket without being copied into this process (zeros past the file's end);
 *   kind == -1  b zero bytes;
 *   kind == -2  the whole of buffers[a] (b is its length).
 * Consecutive buffers and zeros go out in one sendmsg. When the socket is full the job polls it
 * for up to waitMs, then stops: the promise resolves with the bytes sent, fewer than asked, and
 * the caller waits with waitWritable (on the event loop, no thread held) and sends the rest. So
 * a client that stops reading never holds a thread-pool thread for long. Errors reject with the
 * errno's code; `syscall` names the call (sendfile also fails with the file's read errors).
 *
 * The socket is a descriptor of the caller's own (dupSocket), so the connection closing its
 * socket never closes the one a job is using; shutdownSocket wakes a job waiting on it. */

#define SEND_KIND_ZEROS (-1)
#define SEND_KIND_BUFFER (-2)
#define SEND_MAX_ITEMS 65536
#define SEND_IOV_MAX 64
#define SEND_COPY_SIZE (256 * 1024)
#define SEND_MAX_FAILURES 256

static const uint8_t SEND_ZEROS[64 * 1024];

typedef struct {
  int64_t kind, position, length;
  const uint8_t *data; /* a buffer's bytes (kind -2) */
} SendItem;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref buffers_ref;
  int socket;
  int wait_ms;
  size_t count;
  SendItem *items;
  int64_t sent;
  int error;
  const char *failed;
  uint8_t *copy; /* the buffer of send_copied, allocated on first use */
  size_t failure_count;
  int failures[SEND_MAX_FAILURES * 2]; /* [item, errno] of each file range that could not be read */
} SendJob;

/* Wait until the socket takes bytes: 1, or 0 after wait_ms without room, or -1 with errno. */
static int wait_for_room(int socket, int wait_ms) {
  struct pollfd entry = {socket, POLLOUT, 0};
  for (;;) {
    int ready = poll(&entry, 1, wait_ms);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) return -1;
    return ready > 0 ? 1 : 0;
  }
}

/* One non-blocking sendmsg of `count` vectors: the bytes sent, 0 when the socket is full, -1 on
 * a socket error (job->error set). */
static int64_t send_vectors(SendJob *job, struct iovec *vectors, size_t count) {
  struct msghdr message = {0};
  message.msg_iov = vectors;
  message.msg_iovlen = count;
  for (;;) {
    ssize_t put = sendmsg(job->socket, &message, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return 0;
    if (put < 0) {
      job->error = errno;
      job->failed = "sendmsg";
      return -1;
    }
    return put;
  }
}

/* Send items [first, stop) that are buffers or zeros, starting `skip` bytes in: one sendmsg per
 * SEND_IOV_MAX vectors. Returns the bytes sent (short when the socket is full), -1 on error. */
static int64_t send_memory(SendJob *job, size_t first, size_t stop, int64_t skip) {
  struct iovec vectors[SEND_IOV_MAX];
  size_t used = 0;
  int64_t total = 0;
  for (size_t i = first; i < stop && used < SEND_IOV_MAX; i++) {
    SendItem *item = &job->items[i];
    int64_t left = item->length;
    int64_t at = 0;
    if (skip >= left) {
      skip -= left;
      continue;
    }
    at = skip;
    left -= skip;
    skip = 0;
    while (left > 0 && used < SEND_IOV_MAX) {
      int64_t piece = left;
      if (item->kind == SEND_KIND_ZEROS && piece > (int64_t)sizeof SEND_ZEROS) piece = sizeof SEND_ZEROS;
      vectors[used].iov_base = item->kind == SEND_KIND_ZEROS ? (void *)SEND_ZEROS : (void *)(item->data + at);
      vectors[used].iov_len = (size_t)piece;
      used++;
      total += piece;
      at += piece;
      left -= piece;
    }
  }
  if (used == 0) return 0;
  return send_vectors(job, vectors, used);
}

/* sendfile failed: the file cannot be spliced (a filesystem without it: EINVAL), cannot be read
 * (EIO), or the socket failed. Read the next bytes of the item with pread and send them from
 * memory: returns the bytes sent (0: the socket is full), -1 on a socket error (job->error
 * set), -2 when the file cannot be read (errno set), -3 past the file's end. */
static int64_t send_copied(SendJob *job, const SendItem *item, int64_t into) {
  if (!job->copy && !(job->copy = malloc(SEND_COPY_SIZE))) {
    job->error = ENOMEM;
    job->failed = "malloc";
    return -1;
  }
  int64_t want = item->length - into;
  if (want > SEND_COPY_SIZE) want = SEND_COPY_SIZE;
  ssize_t got;
  do got = pread((int)item->kind, job->copy, (size_t)want, (off_t)(item->position + into));
  while (got < 0 && errno == EINTR);
  if (got < 0) return -2;
  if (got == 0) return -3;
  struct iovec vector = {job->copy, (size_t)got};
  return send_vectors(job, &vector, 1);
}

static void send_parts_execute(napi_env env, void *data) {
  (void)env;
  SendJob *job = data;
  size_t index = 0;
  int64_t into = 0; /* bytes of items[index] already sent */
  while (index < job->count) {
    SendItem *item = &job->items[index];
    int64_t progress;
    if (into >= item->length) {
      index++;
      into = 0;
      continue;
    }
    if (item->kind >= 0) {
#ifdef __linux__
      off_t position = (off_t)(item->position + into);
      ssize_t put = sendfile(job->socket, (int)item->kind, &position, (size_t)(item->length - into));
      if (put < 0 && errno == EINTR) continue;
      int64_t result;
      if (put > 0) result = put;
      else if (put == 0) result = -3;
      else if (errno == EAGAIN || errno == EWOULDBLOCK) result = 0;
      else result = send_copied(job, item, into);
      if (result == -1) return;
      if (result == -2) {
        /* The file cannot be read here: the rest of the range goes out as zeros and the caller
         * is told which item failed, so that its reply ends with an error, not with the data. */
        if (job->failure_count == SEND_MAX_FAILURES) {
          job->error = errno;
          job->failed = "pread";
          return;
        }
        job->failures[job->failure_count * 2] = (int)index;
        job->failures[job->failure_count * 2 + 1] = errno;
        job->failure_count++;
      }
      if (result < 0) {
        /* Zeros from here: past the file's end (the range reads as zeros), or unreadable. */
        item->kind = SEND_KIND_ZEROS;
        item->length -= into;
        into = 0;
        continue;
      }
      progress = result;
#else
      job->error = ENOSYS;
      job->failed = "sendfile";
      return;
#endif
    } else {
      size_t stop = index;
      while (stop < job->count && job->items[stop].kind < 0) stop++;
      progress = send_memory(job, index, stop, into);
      if (progress < 0) return;
    }
    if (progress == 0) {
      int room = wait_for_room(job->socket, job->wait_ms);
      if (room < 0) {
        job->error = errno;
        job->failed = "poll";
        return;
      }
      if (room == 0) return; /* still full: the caller waits on the event loop */
      continue;
    }
    job->sent += progress;
    into += progress;
    while (index < job->count && into >= job->items[index].length) {
      into -= job->items[index].length;
      index++;
    }
  }
}

static void send_parts_complete(napi_env env, napi_status status, void *data) {
  SendJob *job = data;
  if (status != napi_ok) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, ECANCELED, "sendfile"));
  } else if (job->error) {
    napi_reject_deferred(env, job->deferred, make_errno_error(env, job->error, job->failed));
  } else {
    napi_value sent, result;
    napi_create_double(env, (double)job->sent, &sent);
    result = sent;
    if (job->failure_count > 0) {
      /* [sent, item, errno, item, errno, ...] */
      napi_create_array_with_length(env, 1 + job->failure_count * 2, &result);
      napi_set_element(env, result, 0, sent);
      for (size_t i = 0; i < job->failure_count * 2; i++) {
        napi_value number;
        napi_create_int32(env, job->failures[i], &number);
        napi_set_element(env, result, (uint32_t)(i + 1), number);
      }
    }
    napi_resolve_deferred(env, job->deferred, result);
  }
  napi_delete_reference(env, job->buffers_ref);
  napi_delete_async_work(env, job->work);
  free(job->copy);
  free(job->items);
  free(job);
}

static napi_value send_parts(napi_env env, napi_callback_info info) {
  napi_value argv[4];
  if (!get_args(env, info, 4, argv)) return NULL;
  int socket;
  int64_t wait_ms;
  if (!get_fd(env, argv[0], &socket) || !get_offset(env, argv[3], "waitMs", &wait_ms)) return NULL;
  napi_typedarray_type type;
  size_t count, byte_offset;
  void *raw_data;
  napi_value array_buffer;
  if (napi_get_typedarray_info(env, argv[1], &type, &count, &raw_data, &array_buffer, &byte_offset) != napi_ok ||
      type != napi_float64_array || count % 3 != 0 || count / 3 > SEND_MAX_ITEMS) {
    napi_throw_type_error(env, "EINVAL", "items must be a Float64Array of at most 65536 [kind, a, b] triples");
    return NULL;
  }
  bool is_array = false;
  uint32_t buffer_count = 0;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &buffer_count) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "buffers must be an array of Uint8Arrays");
    return NULL;
  }
  count /= 3;
  const double *raw = raw_data;
  SendItem *items = calloc(count ? count : 1, sizeof *items);
  if (!items) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  for (size_t i = 0; i < count; i++) {
    double kind = raw[i * 3], a = raw[i * 3 + 1], b = raw[i * 3 + 2];
    bool valid = (double)(int64_t)kind == kind && kind >= SEND_KIND_BUFFER && kind <= 2147483647.0 && a >= 0 &&
                 a <= 9007199254740991.0 && (double)(int64_t)a == a && b >= 0 && b <= 9007199254740991.0 &&
                 (double)(int64_t)b == b;
    if (valid && kind == SEND_KIND_BUFFER) {
      napi_value element;
      napi_typedarray_type element_type;
      size_t length, offset;
      void *bytes;
      napi_value backing;
      valid = a < (double)buffer_count && napi_get_element(env, argv[2], (uint32_t)a, &element) == napi_ok &&
              napi_get_typedarray_info(env, element, &element_type, &length, &bytes, &backing, &offset) == napi_ok &&
              element_type == napi_uint8_array && (double)length == b;
      if (valid) items[i].data = bytes;
    }
    if (!valid) {
      free(items);
      napi_throw_range_error(env, "EINVAL", "an item has an invalid kind, position, length or buffer");
      return NULL;
    }
    items[i].kind = (int64_t)kind;
    items[i].position = (int64_t)a;
    items[i].length = (int64_t)b;
  }
  SendJob *job = calloc(1, sizeof *job);
  if (!job) {
    free(items);
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  job->socket = socket;
  job->wait_ms = wait_ms > 60000 ? 60000 : (int)wait_ms;
  job->count = count;
  job->items = items;
  napi_value promise = queue_job(env, argv[2], "addcow.sendParts", send_parts_execute, send_parts_complete, job,
                                 &job->buffers_ref, &job->deferred, &job->work);
  if (!promise) {
    free(items);
    free(job);
  }
  return promise;
}

/* waitWritable(socket): resolves (with nothing) once poll says the socket takes bytes or has
 * failed (the next send meets the error). Watched by the event loop (uv_poll), not a thread. */
typedef struct {
  uv_poll_t handle;
  napi_env env;
  napi_deferred deferred;
  napi_async_context context;
  napi_ref resource;
} WaitJob;

static void wait_closed(uv_handle_t *handle) { free(handle->data); }

static void wait_ready(uv_poll_t *handle, int status, int events) {
  (void)status;
  (void)events;
  WaitJob *job = handle->data;
  napi_env env = job->env;
  uv_poll_stop(handle);
  napi_handle_scope handles;
  napi_callback_scope scope;
  napi_value resource, undefined;
  napi_open_handle_scope(env, &handles);
  napi_get_reference_value(env, job->resource, &resource);
  /* A callback scope, so the promise's reactions run when it closes, as after any I/O callback. */
  napi_open_callback_scope(env, resource, job->context, &scope);
  napi_get_undefined(env, &undefined);
  napi_resolve_deferred(env, job->deferred, undefined);
  napi_close_callback_scope(env, scope);
  napi_async_destroy(env, job->context);
  napi_delete_reference(env, job->resource);
  napi_close_handle_scope(env, handles);
  uv_close((uv_handle_t *)handle, wait_closed);
}

static napi_value wait_writable(napi_env env, napi_callback_info info) {
  napi_value argv[1], promise, resource, name;
  if (!get_args(env, info, 1, argv)) return NULL;
  int socket;
  if (!get_fd(env, argv[0], &socket)) return NULL;
  struct uv_loop_s *loop;
  CALL(env, napi_get_uv_event_loop(env, &loop));
  WaitJob *job = calloc(1, sizeof *job);
  if (!job) {
    throw_errno(env, ENOMEM, "malloc");
    return NULL;
  }
  job->env = env;
  job->handle.data = job;
  int failure = uv_poll_init(loop, &job->handle, socket);
  if (failure != 0) {
    free(job);
    throw_errno(env, -failure, "uv_poll_init");
    return NULL;
  }
  if (napi_create_object(env, &resource) != napi_ok ||
      napi_create_string_utf8(env, "addcow.waitWritable", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_async_init(env, resource, name, &job->context) != napi_ok ||
      napi_create_reference(env, resource, 1, &job->resource) != napi_ok ||
      napi_create_promise(env, &job->deferred, &promise) != napi_ok) {
    uv_close((uv_handle_t *)&job->handle, wait_closed);
    throw_last(env);
    return NULL;
  }
  failure = uv_poll_start(&job->handle, UV_WRITABLE | UV_DISCONNECT, wait_ready);
  if (failure != 0) {
    /* Resolve now: the next send meets the socket's error. */
    wait_ready(&job->handle, failure, 0);
  }
  return promise;
}

/* dupSocket(fd): a close-on-exec duplicate of a socket descriptor, for sendParts and
 * waitWritable; close it with fs.closeSync once no job uses it. */
static napi_value dup_socket(napi_env env, napi_callback_info info) {
  napi_value argv[1], result;
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  int copy = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  if (copy < 0) {
    throw_errno(env, errno, "fcntl(F_DUPFD_CLOEXEC)");
    return NULL;
  }
  CALL(env, napi_create_int32(env, copy, &result));
  return result;
}

/* shutdownSocket(fd): shutdown(SHUT_RDWR), which wakes a sendParts or waitWritable waiting on
 * it; errors (already shut down, the peer gone) are ignored. */
static napi_value shutdown_socket(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  int fd;
  if (!get_fd(env, argv[0], &fd)) return NULL;
  shutdown(fd, SHUT_RDWR);
  return NULL;
}

static napi_value make_bool(napi_env env, bool value) {
  napi_value result;
  napi_get_boolean(env, value, &result);
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor functions[] = {
      {"punchHole", NULL, punch_hole, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dataExtents", NULL, data_extents, NULL, NULL, NULL, napi_enumerable, NULL},
      {"lock", NULL, lock_file, NULL, NULL, NULL, napi_enumerable, NULL},
      {"unlock", NULL, unlock_file, NULL, NULL, NULL, napi_enumerable, NULL},
      {"copyFileRange", NULL, copy_file_range_js, NULL, NULL, NULL, napi_enumerable, NULL},
      {"punchHoleAsync", NULL, punch_hole_async, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readBatch", NULL, read_batch, NULL, NULL, NULL, napi_enumerable, NULL},
      {"readCached", NULL, read_cached, NULL, NULL, NULL, napi_enumerable, NULL},
      {"sendParts", NULL, send_parts, NULL, NULL, NULL, napi_enumerable, NULL},
      {"waitWritable", NULL, wait_writable, NULL, NULL, NULL, napi_enumerable, NULL},
      {"dupSocket", NULL, dup_socket, NULL, NULL, NULL, napi_enumerable, NULL},
      {"shutdownSocket", NULL, shutdown_socket, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof functions / sizeof functions[0], functions) != napi_ok) {
    return NULL;
  }
  napi_value features;
  if (napi_create_object(env, &features) != napi_ok) return NULL;
#if defined(__linux__) && defined(FALLOC_FL_PUNCH_HOLE)
  napi_set_named_property(env, features, "punchHole", make_bool(env, true));
#else
  napi_set_named_property(env, features, "punchHole", make_bool(env, false));
#endif
#if defined(SEEK_DATA) && defined(SEEK_HOLE)
  napi_set_named_property(env, features, "seekData", make_bool(env, true));
#else
  napi_set_named_property(env, features, "seekData", make_bool(env, false));
#endif
#ifdef F_OFD_SETLK
  napi_set_named_property(env, features, "lock", make_bool(env, true));
  napi_value kind;
  napi_create_string_utf8(env, "qemu-ofd", NAPI_AUTO_LENGTH, &kind);
  napi_set_named_property(env, features, "lockKind", kind);
#else
  napi_set_named_property(env, features, "lock", make_bool(env, true));
  napi_value kind;
  napi_create_string_utf8(env, "flock", NAPI_AUTO_LENGTH, &kind);
  napi_set_named_property(env, features, "lockKind", kind);
#endif
#ifdef __linux__
  napi_set_named_property(env, features, "copyFileRange", make_bool(env, true));
#else
  napi_set_named_property(env, features, "copyFileRange", make_bool(env, false));
#endif
#if defined(__linux__) && defined(RWF_NOWAIT)
  napi_set_named_property(env, features, "readCached", make_bool(env, true));
#else
  napi_set_named_property(env, features, "readCached", make_bool(env, false));
#endif
  /* readBatch takes a write target (writeFd, writePosition) */
  napi_set_named_property(env, features, "readBatchWrite", make_bool(env, true));
#ifdef __linux__
  napi_set_named_property(env, features, "sendParts", make_bool(env, true));
#else
  napi_set_named_property(env, features, "sendParts", make_bool(env, false));
#endif
  napi_set_named_property(env, exports, "features", features);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
