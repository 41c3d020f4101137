/*
 * The daemon's spawn path in C: vfork and exec with the GIL released.
 *
 * spawn.py falls back to os.posix_spawn (and to a fork for scripts with
 * limits or another user) when this module is not built. This path does
 * in the child what posix_spawn cannot: join the script's cgroup, take
 * its user's ids and set its rlimits, so the daemon never moves itself
 * between cgroups and never forks its whole address space.
 *
 * The child shares the daemon's memory until it execs (CLONE_VM |
 * CLONE_VFORK), as in glibc's posix_spawn. So it only makes system calls:
 * ids are changed with raw syscalls (glibc's setuid would signal the
 * daemon's threads), and every signal is blocked from before the clone
 * until the child has put every handler back to its default.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>  /* defines _GNU_SOURCE, for clone() */

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifdef SYS_setgroups32
#define SETGROUPS SYS_setgroups32  /* 32-bit ids on the architectures that have both */
#define SETREGID SYS_setregid32
#define SETREUID SYS_setreuid32
#else
#define SETGROUPS SYS_setgroups
#define SETREGID SYS_setregid
#define SETREUID SYS_setreuid
#endif

#define STACK_SIZE (64 * 1024)
#define MAX_LIMITS 8
#define MAX_GROUPS 256

/* Which step failed in the child; spawn.py turns it into its error. */
enum { STEP_NONE = 0, STEP_CLONE, STEP_SIGNALS, STEP_SETSID, STEP_CGROUP, STEP_STDIO,
       STEP_CHDIR, STEP_IDS, STEP_LIMITS, STEP_EXEC };

struct job {
    const char *path;
    char *const *argv;
    char *const *envp;
    const char *cwd;
    int stdio[3];
    int cgroup_fd;           /* a cgroup.procs opened for writing, or -1 */
    long uid, gid;           /* -1: keep the daemon's */
    int ngroups;
    gid_t groups[MAX_GROUPS];
    int nlimits;
    int limit_what[MAX_LIMITS];
    rlim_t limit_value[MAX_LIMITS];
    volatile int step;       /* written by the child, read after the vfork returns */
    volatile int err;
};

static _Noreturn void fail(struct job *j, int step)
{
    j->err = errno;
    j->step = step;
    _exit(127);
}

static int child(void *arg)
{
    struct job *j = arg;
    struct sigaction dfl, old;
    sigset_t none;

    /* Handlers would run on the daemon's memory: back to default first. Ignored
     * signals too (the daemon ignores SIGPIPE): a script starts clean. */
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        if (sigaction(sig, NULL, &old) != 0)
            continue;  /* glibc's own signals */
        if (old.sa_handler != SIG_DFL && sigaction(sig, &dfl, NULL) != 0)
            fail(j, STEP_SIGNALS);
    }
    if (setsid() < 0)
        fail(j, STEP_SETSID);
    if (j->cgroup_fd >= 0 && write(j->cgroup_fd, "0", 1) != 1)
        fail(j, STEP_CGROUP);
    /* A descriptor already at 0-2 would be overwritten by an earlier dup2. */
    for (int i = 0; i < 3; i++) {
        if (j->stdio[i] < 3 && j->stdio[i] != i) {
            int moved = fcntl(j->stdio[i], F_DUPFD_CLOEXEC, 3);
            if (moved < 0)
                fail(j, STEP_STDIO);
            j->stdio[i] = moved;  /* shared with the parent, which reads only step and err */
        }
    }
    for (int i = 0; i < 3; i++) {
        if (j->stdio[i] == i) {
            if (fcntl(i, F_SETFD, 0) < 0)
                fail(j, STEP_STDIO);
        } else if (dup2(j->stdio[i], i) < 0) {
            fail(j, STEP_STDIO);
        }
    }
    if (chdir(j->cwd) != 0)
        fail(j, STEP_CHDIR);
    if (j->uid >= 0) {
        /* groups, gid, uid, in that order, as the kernel's own calls for this task alone. */
        if (syscall(SETGROUPS, j->ngroups, j->groups) != 0)
            fail(j, STEP_IDS);
        if (syscall(SETREGID, (gid_t)j->gid, (gid_t)j->gid) != 0)
            fail(j, STEP_IDS);
        if (syscall(SETREUID, (uid_t)j->uid, (uid_t)j->uid) != 0)
            fail(j, STEP_IDS);
    }
    for (int i = 0; i < j->nlimits; i++) {
        struct rlimit rl = { j->limit_value[i], j->limit_value[i] };
        if (setrlimit(j->limit_what[i], &rl) != 0)
            fail(j, STEP_LIMITS);
    }
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) != 0)
        fail(j, STEP_SIGNALS);
    execve(j->path, j->argv, j->envp);
    fail(j, STEP_EXEC);
    return 127;
}

/* NULL-terminated array of the bytes in ``seq`` (a tuple the caller keeps alive). */
static char **string_array(PyObject *seq)
{
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    char **out = PyMem_RawMalloc((size_t)(n + 1) * sizeof(char *));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(seq, i);
        if (!PyBytes_Check(item)) {
            PyMem_RawFree(out);
            PyErr_SetString(PyExc_TypeError, "argv and env must hold bytes");
            return NULL;
        }
        out[i] = PyBytes_AS_STRING(item);
    }
    out[n] = NULL;
    return out;
}

PyDoc_STRVAR(spawn_doc,
"spawn(path, argv, env, cwd, stdio, cgroup_fd, limits, uid, gid, groups) -> (pid, step, errno)\n\n"
"Start ``path`` in a session of its own with ``stdio`` (three descriptors) as\n"
"its stdin, stdout and stderr. ``argv`` and ``env`` are tuples of bytes\n"
"(``env`` as b\"NAME=value\"). ``cgroup_fd``: a cgroup.procs the child writes\n"
"itself into, or -1. ``limits``: (RLIMIT_*, value) pairs. ``uid``/``gid``\n"
"-1 keep the daemon's; else ``groups`` are set first. Returns the pid and\n"
"0, 0; or 0, the step that failed and its errno (the child is reaped).");

static PyObject *py_spawn(PyObject *self, PyObject *args)
{
    PyObject *argv_t, *env_t, *limits, *groups;
    const char *path, *cwd;
    int in, out, err_fd, cgroup_fd;
    long uid, gid;
    if (!PyArg_ParseTuple(args, "yO!O!y(iii)iO!llO!", &path, &PyTuple_Type, &argv_t, &PyTuple_Type, &env_t,
                          &cwd, &in, &out, &err_fd, &cgroup_fd, &PyTuple_Type, &limits, &uid, &gid,
                          &PyTuple_Type, &groups))
        return NULL;
    (void)self;
    if (PyTuple_GET_SIZE(limits) > MAX_LIMITS || PyTuple_GET_SIZE(groups) > MAX_GROUPS) {
        PyErr_SetString(PyExc_ValueError, "too many limits or groups");
        return NULL;
    }
    struct job *j = PyMem_RawCalloc(1, sizeof *j);
    char *stack = PyMem_RawMalloc(STACK_SIZE);
    char **argv = string_array(argv_t);
    char **envp = argv ? string_array(env_t) : NULL;
    PyObject *result = NULL;
    if (j == NULL || stack == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (envp == NULL)
        goto done;
    j->path = path;
    j->argv = argv;
    j->envp = envp;
    j->cwd = cwd;
    j->stdio[0] = in;
    j->stdio[1] = out;
    j->stdio[2] = err_fd;
    j->cgroup_fd = cgroup_fd;
    j->uid = uid;
    j->gid = gid;
    j->ngroups = (int)PyTuple_GET_SIZE(groups);
    for (int i = 0; i < j->ngroups; i++) {
        long g = PyLong_AsLong(PyTuple_GET_ITEM(groups, i));
        if (g == -1 && PyErr_Occurred())
            goto done;
        j->groups[i] = (gid_t)g;
    }
    j->nlimits = (int)PyTuple_GET_SIZE(limits);
    for (int i = 0; i < j->nlimits; i++) {
        int what;
        long long value;
        if (!PyArg_ParseTuple(PyTuple_GET_ITEM(limits, i), "iL", &what, &value))
            goto done;
        j->limit_what[i] = what;
        j->limit_value[i] = value < 0 ? RLIM_INFINITY : (rlim_t)value;
    }

    pid_t pid;
    int saved_errno = 0;
    sigset_t all, old;
    sigfillset(&all);
    Py_BEGIN_ALLOW_THREADS
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = clone(child, stack + STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD, j);
    if (pid < 0)
        saved_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid > 0 && j->step != STEP_NONE) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
    }
    Py_END_ALLOW_THREADS
    if (pid < 0)
        result = Py_BuildValue("iii", 0, STEP_CLONE, saved_errno);
    else if (j->step != STEP_NONE)
        result = Py_BuildValue("iii", 0, j->step, j->err);
    else
        result = Py_BuildValue("iii", (int)pid, 0, 0);
done:
    PyMem_RawFree(envp);
    PyMem_RawFree(argv);
    PyMem_RawFree(stack);
    PyMem_RawFree(j);
    return result;
}

static PyMethodDef methods[] = {
    {"spawn", py_spawn, METH_VARARGS, spawn_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_spawn", "The daemon's spawn path: vfork and exec with the GIL released.", -1, methods,
};

PyMODINIT_FUNC PyInit__spawn(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "STEP_CLONE", STEP_CLONE) || PyModule_AddIntConstant(m, "STEP_SIGNALS", STEP_SIGNALS)
        || PyModule_AddIntConstant(m, "STEP_SETSID", STEP_SETSID) || PyModule_AddIntConstant(m, "STEP_CGROUP", STEP_CGROUP)
        || PyModule_AddIntConstant(m, "STEP_STDIO", STEP_STDIO) || PyModule_AddIntConstant(m, "STEP_CHDIR", STEP_CHDIR)
        || PyModule_AddIntConstant(m, "STEP_IDS", STEP_IDS) || PyModule_AddIntConstant(m, "STEP_LIMITS", STEP_LIMITS)
        || PyModule_AddIntConstant(m, "STEP_EXEC", STEP_EXEC)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
