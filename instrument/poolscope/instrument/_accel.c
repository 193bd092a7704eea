/* poolscope's optional accelerator: the hot path of recorder.PoolHandle in C.
 *
 * The pure-Python closures made by PoolHandle._bind (recorder.py) are the reference
 * implementation; this module makes the same records, in the same layout
 * (events.AcquireRecord / ReleaseRecord), appended to the same deque. It is built
 * only where a C compiler is present (setup.py marks the extension optional) and
 * used only when it imports and its clock agrees with time.perf_counter (see
 * accel.py). tests/instrument/test_accel.py checks it against the Python closures.
 *
 * Nothing here may raise into the application: every failure is handed to
 * poolscope.instrument.errors.report (looked up when it happens, as the Python
 * closures do) and swallowed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <frameobject.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include "_shortest.h"

static PyObject *str_acquire;  /* "acquire", interned */
static PyObject *str_release;  /* "release", interned */
static PyObject *str_dropped;  /* "dropped" */
static PyObject *str_report;   /* "report" */
static PyObject *str_where_recorder;
static PyObject *str_where_site;
static PyObject *str_get_name; /* "get_name" */

/* time.perf_counter() without a Python call: CPython reads CLOCK_MONOTONIC for it on
 * Linux and converts nanoseconds to float seconds by one division. accel.py uses this
 * only after checking time.get_clock_info("perf_counter") says that clock. */
static inline double
perf_counter(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    long long ns = (long long)ts.tv_sec * 1000000000LL + (long long)ts.tv_nsec;
    return (double)ns / 1e9;
}

typedef struct {
    PyObject_HEAD
    PyObject *buf;           /* the recorder's deque */
    PyObject *append;        /* buf.append */
    Py_ssize_t cap;          /* the deque's capacity */
    PyObject *recorder;      /* for recorder.dropped += 1 */
    PyObject *pool_name;
    PyObject *tags_var;      /* tags.current, a ContextVar */
    PyObject *errors;        /* the errors module (report looked up when needed) */
    PyObject *clock;         /* time.perf_counter, or None: read CLOCK_MONOTONIC here */
    int depth;               /* the handle's site_depth */
    PyObject *code_index;    /* sites._code_index: id(code) -> index */
    PyObject *code_internal; /* sites._code_internal: index -> pool machinery */
    PyObject *intern;        /* sites._intern */
    PyObject *current_task;  /* asyncio.current_task */
    PyObject *tasks_by_loop; /* asyncio.tasks._current_tasks, or None */
    PyObject *task_type;     /* asyncio.Task: named here (held_by's usual case) */
    PyObject *held_by;       /* naming.held_by: every other holder */
    PyObject *get_name;      /* asyncio.Task.get_name, called unbound */
    PyObject *last_pair;     /* the latest (name, weak reference) made, or NULL */
} HotObject;

/* Hand the pending exception to errors.report (looked up on the module now, as the
 * Python code does, so a replaced one is called); never let one escape. */
static void
report(PyObject *errors, PyObject *where)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value != NULL) {
        PyObject *fn = PyObject_GetAttr(errors, str_report);
        if (fn != NULL) {
            PyObject *args[2] = {where, value};
            PyObject *res = PyObject_Vectorcall(fn, args, 2, NULL);
            Py_XDECREF(res);
            Py_DECREF(fn);
        }
    }
    PyErr_Clear();
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

static PyObject *
now(HotObject *self)
{
    if (self->clock == Py_None)
        return PyFloat_FromDouble(perf_counter());
    return PyObject_CallNoArgs(self->clock);
}

/* Count a drop when the deque is full (its append then drops the oldest). */
static int
count_drop(HotObject *self)
{
    Py_ssize_t n = PyObject_Length(self->buf);
    if (n < 0)
        return -1;
    if (n < self->cap)
        return 0;
    PyObject *d = PyObject_GetAttr(self->recorder, str_dropped);
    if (d == NULL)
        return -1;
    PyObject *one = PyLong_FromLong(1);
    PyObject *d2 = one ? PyNumber_Add(d, one) : NULL;
    Py_DECREF(d);
    Py_XDECREF(one);
    if (d2 == NULL)
        return -1;
    int rc = PyObject_SetAttr(self->recorder, str_dropped, d2);
    Py_DECREF(d2);
    return rc;
}

/* Build the record from its items (references stolen, any may be NULL on error) and
 * append it. Returns 0, or -1 with an exception set. */
static int
push(HotObject *self, PyObject **items, Py_ssize_t n)
{
    PyObject *rec = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL)
            goto fail;
    }
    if (count_drop(self) < 0)
        goto fail;
    rec = PyTuple_New(n);
    if (rec == NULL)
        goto fail;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(rec, i, items[i]);
        items[i] = NULL;
    }
    /* Out of the garbage collector's sight: a record is in no reference cycle (nothing
     * it holds refers back to it), and with a busy pool the buffer holds 10^5 of them,
     * which every collection of the older generations would otherwise traverse. */
    PyObject_GC_UnTrack(rec);
    PyObject *res = PyObject_CallOneArg(self->append, rec);
    Py_DECREF(rec);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
fail:
    for (Py_ssize_t i = 0; i < n; i++)
        Py_XDECREF(items[i]);
    if (!PyErr_Occurred())
        PyErr_SetString(PyExc_RuntimeError, "poolscope accelerator: no record");
    return -1;
}

static PyObject *
current_tags(HotObject *self)
{
    PyObject *v = NULL;
    if (PyContextVar_Get(self->tags_var, Py_None, &v) < 0)
        return NULL;
    return v; /* a new reference (Py_None when unset and the var has no default) */
}

/* Positional-or-keyword arguments of a METH_FASTCALL|METH_KEYWORDS method into
 * out[0..nparams) (borrowed, NULL when not given). */
static int
parse(const char *fname, const char *const *names, Py_ssize_t nparams, Py_ssize_t required,
      PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, PyObject **out)
{
    for (Py_ssize_t i = 0; i < nparams; i++)
        out[i] = NULL;
    if (nargs > nparams) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %zd arguments (%zd given)", fname,
                     nparams, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++)
        out[i] = args[i];
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nkw; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            Py_ssize_t i;
            for (i = 0; i < nparams; i++) {
                if (PyUnicode_CompareWithASCIIString(key, names[i]) == 0)
                    break;
            }
            if (i == nparams) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument '%U'",
                             fname, key);
                return -1;
            }
            if (out[i] != NULL) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument '%s'",
                             fname, names[i]);
                return -1;
            }
            out[i] = args[nargs + k];
        }
    }
    for (Py_ssize_t i = 0; i < required; i++) {
        if (out[i] == NULL) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument '%s'", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

static inline PyObject *
new_ref(PyObject *o)
{
    Py_INCREF(o);
    return o;
}

/* naming.held_by: what the record keeps of its holder (the reference stolen; NULL on
 * error): an asyncio.Task as its (name, weak reference) pair, named now - a record
 * holding the task itself kept a finished request's task alive for a drain tick, and
 * its deferred freeing drove the cyclic collector (naming.held_by says how much). */
static PyObject *
held_by(HotObject *self, PyObject *holder)
{
    if (holder == NULL || holder == Py_None || PyLong_CheckExact(holder) ||
        PyTuple_CheckExact(holder))
        return holder;
    /* asyncio.Task, or a subclass that keeps its get_name (a framework's own task
     * class): named here; anything else by the Python function. */
    if (Py_IS_TYPE(holder, (PyTypeObject *)self->task_type) ||
        (PyObject_TypeCheck(holder, (PyTypeObject *)self->task_type) &&
         _PyType_Lookup(Py_TYPE(holder), str_get_name) == self->get_name)) {
        /* holder_name's (str(task.get_name()), weakref.ref(task)), for an exact str. */
        PyObject *name = PyObject_Vectorcall(self->get_name, &holder, 1, NULL);
        PyObject *last = self->last_pair;
        if (name != NULL && last != NULL && PyTuple_GET_ITEM(last, 0) == name &&
            PyWeakref_GET_OBJECT(PyTuple_GET_ITEM(last, 1)) == holder) {
            /* The same task under the same name as the latest acquire (a task that
             * acquires in a loop): the same pair. A task gone has a dead reference, a
             * renamed one another name: neither matches. */
            Py_DECREF(name);
            Py_DECREF(holder);
            return new_ref(last);
        }
        if (name != NULL && PyUnicode_CheckExact(name)) {
            PyObject *ref = PyWeakref_NewRef(holder, NULL);
            /* A weak reference without a callback is in no cycle (it does not own its
             * object): out of the collector's sight, it is never promoted to an older
             * generation while a record or an open hold keeps it. */
            if (ref != NULL && ((PyWeakReference *)ref)->wr_callback == NULL)
                PyObject_GC_UnTrack(ref);
            PyObject *pair = ref != NULL ? PyTuple_New(2) : NULL;
            if (pair != NULL) {
                PyTuple_SET_ITEM(pair, 0, name);
                PyTuple_SET_ITEM(pair, 1, ref);
                PyObject_GC_UnTrack(pair); /* a str and a weak reference: no cycle */
                Py_DECREF(holder);
                Py_XSETREF(self->last_pair, new_ref(pair));
                return pair;
            }
            Py_XDECREF(ref);
        }
        Py_XDECREF(name);
        PyErr_Clear(); /* the Python function meets the same and reports it */
    }
    PyObject *out = PyObject_CallOneArg(self->held_by, holder);
    Py_DECREF(holder);
    return out;
}

/* acquired(conn, wait, site, holder): an acquire whose site and holder the adapter took. */
static PyObject *
Hot_acquired(HotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"conn", "wait", "site", "holder"};
    PyObject *a[4];
    if (parse("acquired", names, 4, 4, args, nargs, kwnames, a) < 0)
        return NULL; /* a wrong call is the caller's bug, as with the Python closure */
    PyObject *items[8] = {new_ref(str_acquire), now(self),        new_ref(self->pool_name),
                          new_ref(a[0]),        new_ref(a[1]),    new_ref(a[2]),
                          held_by(self, new_ref(a[3])), current_tags(self)};
    if (push(self, items, 8) < 0)
        report(self->errors, str_where_recorder);
    Py_RETURN_NONE;
}

/* released(conn, hold=None, t=None) */
static PyObject *
Hot_released(HotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"conn", "hold", "t"};
    PyObject *a[3];
    if (parse("released", names, 3, 1, args, nargs, kwnames, a) < 0)
        return NULL;
    PyObject *hold = a[1] != NULL ? a[1] : Py_None;
    PyObject *t = (a[2] != NULL && a[2] != Py_None) ? new_ref(a[2]) : now(self);
    PyObject *items[5] = {new_ref(str_release), t, new_ref(self->pool_name), new_ref(a[0]),
                          new_ref(hold)};
    if (push(self, items, 5) < 0)
        report(self->errors, str_where_recorder);
    Py_RETURN_NONE;
}

static int
frame_lasti(PyFrameObject *f, PyObject **out)
{
#if PY_VERSION_HEX >= 0x030B0000
    *out = PyLong_FromLong(PyFrame_GetLasti(f));
#else
    *out = PyObject_GetAttrString((PyObject *)f, "f_lasti");
#endif
    return *out == NULL ? -1 : 0;
}

/* The code index of a frame: sites._code_index, interned with sites._intern when new.
 * -2 with an exception set on failure. */
static Py_ssize_t
code_index_of(HotObject *self, PyFrameObject *f)
{
    PyCodeObject *code = PyFrame_GetCode(f);
    PyObject *key = PyLong_FromVoidPtr(code);
    if (key == NULL) {
        Py_DECREF(code);
        return -2;
    }
    PyObject *idx = PyDict_GetItemWithError(self->code_index, key); /* borrowed */
    Py_DECREF(key);
    if (idx != NULL) {
        Py_DECREF(code);
        Py_INCREF(idx);
    } else {
        if (PyErr_Occurred()) {
            Py_DECREF(code);
            return -2;
        }
        idx = PyObject_CallOneArg(self->intern, (PyObject *)code);
        Py_DECREF(code);
        if (idx == NULL)
            return -2;
    }
    Py_ssize_t i = PyLong_AsSsize_t(idx);
    Py_DECREF(idx);
    if (i == -1 && PyErr_Occurred())
        return -2;
    return i;
}

/* Whether code index i is pool machinery (1), not (0), or -1 on error. */
static int
is_internal(HotObject *self, Py_ssize_t i)
{
    if (i < 0)
        return 0;
    PyObject *flag = PySequence_GetItem(self->code_internal, i);
    if (flag == NULL)
        return -1;
    int rc = PyObject_IsTrue(flag);
    Py_DECREF(flag);
    return rc;
}

/* sites.capture(depth, ...) in C: from the frame ``back`` frames above the current one
 * (the current frame is the pool's method that called us: C has no frame of its own),
 * pool machinery frames are skipped, then up to ``depth`` frames are kept as
 * (code index, lasti, ...); () when there is no such frame. New reference, or NULL. */
static PyObject *
walk(HotObject *self, int depth, long back)
{
    PyFrameObject *f = PyEval_GetFrame();
    Py_XINCREF(f);
    for (long i = 0; i < back && f != NULL; i++) {
        PyFrameObject *b = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = b;
    }
    Py_ssize_t i = -1;
    while (f != NULL) {
        i = code_index_of(self, f);
        if (i == -2)
            goto fail;
        int internal = is_internal(self, i);
        if (internal < 0)
            goto fail;
        if (!internal)
            break;
        PyFrameObject *b = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = b;
    }
    if (f == NULL)
        return PyTuple_New(0);
    PyObject *out = PyTuple_New(2 * (Py_ssize_t)depth);
    if (out == NULL)
        goto fail;
    PyObject_GC_UnTrack(out); /* ints only: never in a cycle (see push) */
    Py_ssize_t n = 0;
    while (1) {
        PyObject *ref = PyLong_FromSsize_t(i);
        PyObject *lasti = NULL;
        if (ref == NULL || frame_lasti(f, &lasti) < 0) {
            Py_XDECREF(ref);
            Py_DECREF(out);
            goto fail;
        }
        PyTuple_SET_ITEM(out, n, ref);
        PyTuple_SET_ITEM(out, n + 1, lasti);
        n += 2;
        if (n >= 2 * (Py_ssize_t)depth)
            break;
        PyFrameObject *b = PyFrame_GetBack(f);
        Py_DECREF(f);
        f = b;
        if (f == NULL)
            break;
        i = code_index_of(self, f);
        if (i == -2) {
            Py_DECREF(out);
            goto fail;
        }
    }
    Py_XDECREF(f);
    if (n < PyTuple_GET_SIZE(out) && _PyTuple_Resize(&out, n) < 0)
        return NULL;
    return out;
fail:
    Py_XDECREF(f);
    return NULL;
}

static PyObject *
holder_task(HotObject *self, PyObject *loop)
{
    if (loop == NULL || loop == Py_None || self->tasks_by_loop == Py_None)
        return PyObject_CallNoArgs(self->current_task);
    PyObject *task = PyDict_GetItemWithError(self->tasks_by_loop, loop);
    if (task == NULL) {
        if (PyErr_Occurred())
            return NULL;
        Py_RETURN_NONE;
    }
    return new_ref(task);
}

/* acquired_here(conn, wait, t=None, loop=None, up=0): see recorder.py. */
static PyObject *
Hot_acquired_here(HotObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    static const char *const names[] = {"conn", "wait", "t", "loop", "up"};
    PyObject *a[5];
    if (parse("acquired_here", names, 5, 2, args, nargs, kwnames, a) < 0)
        return NULL;
    long up = 0;
    if (a[4] != NULL) {
        up = PyLong_AsLong(a[4]);
        if (up == -1 && PyErr_Occurred())
            return NULL;
        if (up < 0)
            up = 0;
    }
    PyObject *site;
    if (self->depth > 0) {
        site = walk(self, self->depth, 1 + up);
    } else {
        site = new_ref(Py_None); /* site_depth=0: none */
    }
    if (site == NULL) { /* the acquire is still recorded, without a site */
        report(self->errors, str_where_site);
        site = new_ref(Py_None);
    }
    PyObject *t = (a[2] != NULL && a[2] != Py_None) ? new_ref(a[2]) : now(self);
    PyObject *items[8] = {new_ref(str_acquire),
                          t,
                          new_ref(self->pool_name),
                          new_ref(a[0]),
                          new_ref(a[1]),
                          site,
                          held_by(self, holder_task(self, a[3])),
                          current_tags(self)};
    if (push(self, items, 8) < 0)
        report(self->errors, str_where_recorder);
    Py_RETURN_NONE;
}

static int
Hot_traverse(HotObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->buf);
    Py_VISIT(self->append);
    Py_VISIT(self->recorder);
    Py_VISIT(self->pool_name);
    Py_VISIT(self->tags_var);
    Py_VISIT(self->errors);
    Py_VISIT(self->clock);
    Py_VISIT(self->code_index);
    Py_VISIT(self->code_internal);
    Py_VISIT(self->intern);
    Py_VISIT(self->current_task);
    Py_VISIT(self->tasks_by_loop);
    Py_VISIT(self->task_type);
    Py_VISIT(self->held_by);
    Py_VISIT(self->get_name);
    Py_VISIT(self->last_pair);
    return 0;
}

static int
Hot_clear(HotObject *self)
{
    Py_CLEAR(self->buf);
    Py_CLEAR(self->append);
    Py_CLEAR(self->recorder);
    Py_CLEAR(self->pool_name);
    Py_CLEAR(self->tags_var);
    Py_CLEAR(self->errors);
    Py_CLEAR(self->clock);
    Py_CLEAR(self->code_index);
    Py_CLEAR(self->code_internal);
    Py_CLEAR(self->intern);
    Py_CLEAR(self->current_task);
    Py_CLEAR(self->tasks_by_loop);
    Py_CLEAR(self->task_type);
    Py_CLEAR(self->held_by);
    Py_CLEAR(self->get_name);
    Py_CLEAR(self->last_pair);
    return 0;
}

static void
Hot_dealloc(HotObject *self)
{
    PyObject_GC_UnTrack(self);
    Hot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Hot_init(HotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"recorder", "buf", "cap", "pool_name", "tags_var",
                             "errors", "clock", "depth", "code_index", "code_internal",
                             "intern", "current_task", "tasks_by_loop", "task_type",
                             "held_by", NULL};
    PyObject *recorder, *buf, *pool_name, *tags_var, *errors, *clock, *code_index,
        *code_internal, *intern, *current_task, *tasks_by_loop, *task_type, *held_by;
    Py_ssize_t cap;
    int depth;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOnUOOOiO!OOOOO!O", kwlist, &recorder,
                                     &buf, &cap, &pool_name, &tags_var, &errors, &clock,
                                     &depth, &PyDict_Type, &code_index, &code_internal,
                                     &intern, &current_task, &tasks_by_loop, &PyType_Type,
                                     &task_type, &held_by))
        return -1;
    if (!PyContextVar_CheckExact(tags_var)) {
        PyErr_SetString(PyExc_TypeError, "tags_var must be a ContextVar");
        return -1;
    }
    if (tasks_by_loop != Py_None && !PyDict_Check(tasks_by_loop)) {
        PyErr_SetString(PyExc_TypeError, "tasks_by_loop must be a dict or None");
        return -1;
    }
    PyObject *append = PyObject_GetAttrString(buf, "append");
    if (append == NULL)
        return -1;
    Hot_clear(self);
    self->append = append;
    self->cap = cap;
    self->depth = depth;
#define KEEP(field) (self->field = new_ref(field))
    KEEP(buf);
    KEEP(recorder);
    KEEP(pool_name);
    KEEP(tags_var);
    KEEP(errors);
    KEEP(clock);
    KEEP(code_index);
    KEEP(code_internal);
    KEEP(intern);
    KEEP(current_task);
    KEEP(tasks_by_loop);
    KEEP(task_type);
    KEEP(held_by);
#undef KEEP
    self->get_name = PyObject_GetAttr(task_type, str_get_name);
    if (self->get_name == NULL)
        return -1;
    return 0;
}

static PyMethodDef Hot_methods[] = {
    {"acquired", (PyCFunction)(void (*)(void))Hot_acquired, METH_FASTCALL | METH_KEYWORDS,
     "An acquire: (conn, wait, site, holder)."},
    {"released", (PyCFunction)(void (*)(void))Hot_released, METH_FASTCALL | METH_KEYWORDS,
     "A release: (conn, hold=None, t=None)."},
    {"acquired_here", (PyCFunction)(void (*)(void))Hot_acquired_here,
     METH_FASTCALL | METH_KEYWORDS,
     "An acquire from an asyncio pool's own acquire: (conn, wait, t=None, loop=None, up=0)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject HotType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolscope.instrument._accel.Hot",
    .tp_basicsize = sizeof(HotObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "One pool handle's hot path: acquired, released, acquired_here.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Hot_init,
    .tp_dealloc = (destructor)Hot_dealloc,
    .tp_traverse = (traverseproc)Hot_traverse,
    .tp_clear = (inquiry)Hot_clear,
    .tp_methods = Hot_methods,
};

/* ---------------------------------------------------------------------------------
 * The fold of hot-path records: drain.Drain.run's loop body for the usual acquire and
 * release, in C. Drain.run calls Folder.run over a batch; it folds records from
 * ``start`` for as long as each is the usual case, and returns where it stopped: the
 * Python loop body (the reference) takes that item, then calls run again. The usual
 * case is checked before anything changes: a known pool without recent windows, a
 * known site or none, no ps.tag() labels, float clocks, a holder not reported as a
 * leak, and a pool not over MAX_HOLDERS. Each folded record changes the model as
 * PoolState.fold_acquire / fold_ended and Attribution.on_acquire / on_release do
 * (the attribution's rarer paths are called in Python).
 * --------------------------------------------------------------------------------- */

#include <structmember.h>

#define HOLDER_FIELDS 9
static const char *const holder_fields[HOLDER_FIELDS] = {
    "conn", "since", "site", "task", "tags", "mono", "raw_site", "ref", "leak_reported"};
enum { H_CONN, H_SINCE, H_SITE, H_TASK, H_TAGS, H_MONO, H_RAW_SITE, H_REF, H_LEAK };

typedef struct {
    PyObject_HEAD
    PyObject *pools;          /* model.pools */
    PyTypeObject *holder;     /* records.Holder */
    Py_ssize_t offsets[HOLDER_FIELDS]; /* its slots, or all -1: call the class */
    PyObject *attribution;    /* model.attribution */
    PyObject *blame;          /* attribution._pools */
    PyObject *site_ids;       /* interner.site_ids */
    PyObject *pending;        /* interner.pending */
    PyObject *holder_name;    /* naming.holder_name */
    PyObject *redacted;       /* naming._redacted_names */
    PyObject *redacted_name;  /* naming.redacted_name */
    PyObject *tags_id;        /* interner.tags_id */
    PyObject *request_name;   /* naming.request_name */
    PyObject *encode_acquire;
    PyObject *encode_release;
    PyObject *escaped;        /* events._escaped: JSON-escaped strings */
    PyObject *quoted;         /* events._quoted */
    PyObject *errors;
    Py_ssize_t max_holders;
    double wait_min;
    double calm; /* attribution.CALM */
    Py_ssize_t cover_kept;  /* attribution.COVER_KEPT */
    Py_ssize_t recent_scan; /* attribution.MAX_RECENT_SCAN */
    /* poolscope.histogram: Histogram.add_trusted written out (a route's hold) */
    PyObject *hist_type;      /* Histogram */
    PyObject *hist_edges;     /* _EDGES, a list of floats */
    PyObject *hist_bucket_of; /* bucket_of, for a value outside the edges */
    long hist_lowest;         /* _LOWEST */
    double hist_min;          /* MIN_VALUE */
    PyObject *tag_ids;        /* interner.tag_ids, or NULL */
    PyObject *fast_labels;    /* accel._fast_labels(): request label classes, or NULL */
} FolderObject;

static PyObject *s_last_t, *s_acquires, *s_releases, *s_recent, *s_pending_waits,
    *s_pending_holds, *s_holders, *s_held, *s_last_end, *s_disorder,
    *s_on_release, *s_append, *s_popleft, *s_type, *s_t, *s_pool, *s_conn, *s_wait,
    *s_site, *s_task, *s_hold, *s_fold, *s_encode, *s_tags, *s_zero, *s_last_wait,
    *s_acquired, *s_calm, *s_labels, *s_routes, *s_route, *s_route_method, *s_waits,
    *s_waited, *s_add_trusted, *s_cover, *s_pending, *s_pending_sec, *s_pending_wait,
    *s_charge, *s_empty, *s_one, *s_buckets, *s_count, *s_sum, *s_min, *s_max, *s__route,
    *s_parent;

/* A float attribute as a double; -1 (exception set) unless it is an exact float. */
static int
get_double(PyObject *obj, PyObject *name, double *out)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    if (!PyFloat_CheckExact(v)) {
        Py_DECREF(v);
        PyErr_SetString(PyExc_TypeError, "not a float");
        return -1;
    }
    *out = PyFloat_AS_DOUBLE(v);
    Py_DECREF(v);
    return 0;
}

/* if t > p.last_t: p.last_t = t */
static int
raise_last_t(PyObject *p, PyObject *t)
{
    PyObject *last = PyObject_GetAttr(p, s_last_t);
    if (last == NULL)
        return -1;
    int later = PyObject_RichCompareBool(t, last, Py_GT);
    Py_DECREF(last);
    if (later < 0)
        return -1;
    return later ? PyObject_SetAttr(p, s_last_t, t) : 0;
}

static PyObject *
new_holder(FolderObject *self, PyObject **values)
{
    if (self->offsets[0] < 0)
        return PyObject_Vectorcall((PyObject *)self->holder, values, H_LEAK, NULL);
    /* The dataclass's __init__ only stores its fields: stored here in its slots. */
    PyObject *h = self->holder->tp_alloc(self->holder, 0);
    if (h == NULL)
        return NULL;
    /* In no cycle: its references are strings, numbers, the raw site (ints) and a weak
     * reference or a thread id; untracked as records are (see push). */
    PyObject_GC_UnTrack(h);
    for (int i = 0; i < HOLDER_FIELDS; i++) {
        PyObject *v = i == H_LEAK ? Py_False : values[i];
        Py_INCREF(v);
        *(PyObject **)((char *)h + self->offsets[i]) = v;
    }
    return h;
}

/* A holder's slot (borrowed; NULL if unset, with an exception). */
static PyObject *
holder_get(FolderObject *self, PyObject *h, int field)
{
    if (self->offsets[0] >= 0 && Py_TYPE(h) == self->holder) {
        PyObject *v = *(PyObject **)((char *)h + self->offsets[field]);
        if (v == NULL)
            PyErr_SetString(PyExc_AttributeError, holder_fields[field]);
        return v;
    }
    PyObject *v = PyObject_GetAttrString(h, holder_fields[field]);
    if (v == NULL)
        return NULL;
    Py_DECREF(v); /* the holder keeps it alive */
    return v;
}

/* The pool the last records were for, fetched once for a run of records of one pool
 * (records of one pool come in runs): the model's PoolMetrics, its holders and bulk
 * lists, and its counters kept here until flushed (at the next pool and at the end
 * of Folder.run: nothing reads them in between). */
typedef struct {
    PyObject *name;    /* borrowed from the record: compared by identity, then value */
    PyObject *p;       /* new refs from here on */
    PyObject *holders;
    PyObject *waits;
    PyObject *holds;
    long long acquires, releases;
    double last_t;     /* the latest t folded, if any */
    int have_t;
} PoolCache;

static int
cache_flush(PoolCache *pc)
{
    int rc = 0;
    if (pc->p != NULL) {
        if (pc->acquires || pc->releases) {
            PyObject *names[2] = {s_acquires, s_releases};
            long long deltas[2] = {pc->acquires, pc->releases};
            for (int k = 0; k < 2 && rc == 0; k++) {
                if (!deltas[k])
                    continue;
                PyObject *v = PyObject_GetAttr(pc->p, names[k]);
                PyObject *d = PyLong_FromLongLong(deltas[k]);
                PyObject *v2 = (v != NULL && d != NULL) ? PyNumber_Add(v, d) : NULL;
                rc = v2 != NULL ? PyObject_SetAttr(pc->p, names[k], v2) : -1;
                Py_XDECREF(v);
                Py_XDECREF(d);
                Py_XDECREF(v2);
            }
        }
        if (rc == 0 && pc->have_t) {
            PyObject *t = PyFloat_FromDouble(pc->last_t);
            rc = t != NULL ? raise_last_t(pc->p, t) : -1;
            Py_XDECREF(t);
        }
    }
    pc->name = NULL;
    Py_CLEAR(pc->p);
    Py_CLEAR(pc->holders);
    Py_CLEAR(pc->waits);
    Py_CLEAR(pc->holds);
    pc->acquires = pc->releases = 0;
    pc->have_t = 0;
    return rc;
}

/* The cache loaded for ``pool`` if it is the usual pool: known, no recent windows,
 * holders a dict, bulk lists. 1 usual, 0 not (no exception), -1 error. */
static int
cache_load(FolderObject *self, PoolCache *pc, PyObject *pool)
{
    if (!PyUnicode_CheckExact(pool))
        return 0;
    if (pc->name != NULL && (pc->name == pool || PyUnicode_Compare(pc->name, pool) == 0))
        return 1; /* both exact strings: the comparison cannot fail */
    if (cache_flush(pc) < 0)
        return -1;
    PyObject *p = PyDict_GetItemWithError(self->pools, pool);
    if (p == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *recent = PyObject_GetAttr(p, s_recent);
    if (recent == NULL)
        return -1;
    Py_DECREF(recent);
    if (recent != Py_None)
        return 0;
    PyObject *holders = PyObject_GetAttr(p, s_holders);
    PyObject *waits = holders != NULL ? PyObject_GetAttr(p, s_pending_waits) : NULL;
    PyObject *holds = waits != NULL ? PyObject_GetAttr(p, s_pending_holds) : NULL;
    if (holds == NULL || !PyDict_CheckExact(holders) || !PyList_CheckExact(waits) ||
        !PyList_CheckExact(holds)) {
        Py_XDECREF(holders);
        Py_XDECREF(waits);
        Py_XDECREF(holds);
        return PyErr_Occurred() ? -1 : 0;
    }
    pc->name = pool;
    pc->p = new_ref(p);
    pc->holders = holders;
    pc->waits = waits;
    pc->holds = holds;
    return 1;
}

static inline void
cache_saw(PoolCache *pc, double t)
{
    if (!pc->have_t || t > pc->last_t) {
        pc->last_t = t;
        pc->have_t = 1;
    }
}

/* The attribution's state of a pool (borrowed, may be NULL), and whether it counts
 * holders now (pb.held is not None). -1 on error. */
static int
blame_of(FolderObject *self, PyObject *pool, PyObject **pb)
{
    *pb = PyDict_GetItemWithError(self->blame, pool);
    if (*pb == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *held = PyObject_GetAttr(*pb, s_held);
    if (held == NULL)
        return -1;
    Py_DECREF(held);
    return held != Py_None;
}

/* attribution._count: held[(site, tags)] += d, the key dropped when it reaches 0. */
static int
count_held(PyObject *held, PyObject *site, PyObject *tags, long d)
{
    if (!PyDict_CheckExact(held)) {
        PyErr_SetString(PyExc_TypeError, "held: not a dict");
        return -1;
    }
    PyObject *key = PyTuple_Pack(2, site, tags);
    if (key == NULL)
        return -1;
    PyObject *cur = PyDict_GetItemWithError(held, key); /* borrowed */
    long n = d;
    if (cur != NULL) {
        long was = PyLong_AsLong(cur);
        if (was == -1 && PyErr_Occurred()) {
            Py_DECREF(key);
            return -1;
        }
        n += was;
    } else if (PyErr_Occurred()) {
        Py_DECREF(key);
        return -1;
    }
    int rc;
    if (n > 0) {
        PyObject *v = PyLong_FromLong(n);
        rc = v != NULL ? PyDict_SetItem(held, key, v) : -1;
        Py_XDECREF(v);
    } else {
        rc = cur != NULL ? PyDict_DelItem(held, key) : 0;
    }
    Py_DECREF(key);
    return rc;
}

/* count_held for a holder's own key (its site and labels). */
static int
count_holder(FolderObject *self, PyObject *held, PyObject *h, long d)
{
    PyObject *site = holder_get(self, h, H_SITE);
    PyObject *tags = site != NULL ? holder_get(self, h, H_TAGS) : NULL;
    return tags != NULL ? count_held(held, site, tags, d) : -1;
}

/* Attribution.on_acquire's counting branch, for an untagged acquire that did not wait
 * while the pool counts its holders by key (it had a wait in the last CALM seconds):
 * the holder counted (the one it replaced uncounted) and kept among recent acquires;
 * or, after CALM seconds without a wait, pb.calm(). */
static int
count_acquire(FolderObject *self, PyObject *pb, PyObject *t, double td, PyObject *h,
              PyObject *replaced)
{
    double last_wait;
    if (get_double(pb, s_last_wait, &last_wait) < 0)
        return -1;
    if (td - last_wait > self->calm) {
        PyObject *r = PyObject_CallMethodNoArgs(pb, s_calm);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *held = PyObject_GetAttr(pb, s_held);
    if (held == NULL)
        return -1;
    int rc = replaced != NULL ? count_holder(self, held, replaced, -1) : 0;
    if (rc == 0)
        rc = count_holder(self, held, h, 1);
    Py_DECREF(held);
    if (rc < 0)
        return -1;
    PyObject *acquired = PyObject_GetAttr(pb, s_acquired);
    if (acquired == NULL)
        return -1;
    PyObject *entry = PyTuple_Pack(2, t, h);
    /* Kept for 4,096 acquires: untracked, or each one would be traversed and promoted
     * to the oldest generation (the holder in it does not refer back to it). */
    if (entry != NULL)
        PyObject_GC_UnTrack(entry);
    PyObject *r = entry != NULL ? PyObject_CallMethodOneArg(acquired, s_append, entry) : NULL;
    Py_XDECREF(entry);
    Py_DECREF(acquired);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* records.let_go: an ended hold drops its task reference and raw site (attribution
 * keeps ended holders a while; their weak references must not live on with them). */
static int
let_go(FolderObject *self, PyObject *h)
{
    static const int fields[2] = {H_REF, H_RAW_SITE};
    for (int k = 0; k < 2; k++) {
        int f = fields[k];
        if (self->offsets[0] >= 0 && Py_TYPE(h) == self->holder) {
            PyObject **slot = (PyObject **)((char *)h + self->offsets[f]);
            PyObject *old = *slot;
            *slot = new_ref(Py_None);
            Py_XDECREF(old);
        } else if (PyObject_SetAttrString(h, holder_fields[f], Py_None) < 0) {
            return -1;
        }
    }
    return 0;
}

/* -- wait attribution for labelled holders and waits, as attribution.py does it -------
 * Attribution.on_acquire's route stats and its charge(), on_release's route hold: in
 * C for the common case, in the same order of dict updates (the booked charges keep
 * their insertion order), the Python methods for the rare one (a pool's first wait in
 * a while, a new second, a wait before the latest interval, a new route). */

/* obj.name += delta, with Python's own addition. */
static int
attr_add(PyObject *obj, PyObject *name, PyObject *delta)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    if (v == NULL)
        return -1;
    PyObject *nv = PyNumber_InPlaceAdd(v, delta);
    Py_DECREF(v);
    if (nv == NULL)
        return -1;
    int rc = PyObject_SetAttr(obj, name, nv);
    Py_DECREF(nv);
    return rc;
}

/* acc[key] = acc.get(key, 0.0) + d (or - d). */
static int
acc_add(PyObject *acc, PyObject *key, double d, int subtract)
{
    PyObject *cur = PyDict_GetItemWithError(acc, key); /* borrowed */
    PyObject *nv;
    if (cur == NULL) {
        if (PyErr_Occurred())
            return -1;
        nv = PyFloat_FromDouble(subtract ? 0.0 - d : 0.0 + d);
    } else if (PyFloat_CheckExact(cur)) {
        double c = PyFloat_AS_DOUBLE(cur);
        nv = PyFloat_FromDouble(subtract ? c - d : c + d);
    } else {
        PyObject *dv = PyFloat_FromDouble(d);
        if (dv == NULL)
            return -1;
        nv = subtract ? PyNumber_Subtract(cur, dv) : PyNumber_Add(cur, dv);
        Py_DECREF(dv);
    }
    if (nv == NULL)
        return -1;
    int rc = PyDict_SetItem(acc, key, nv);
    Py_DECREF(nv);
    return rc;
}

/* One charge's sums per (site, labels) key, kept here while its loops run and written
 * to pb.pending once at the end: the same additions in the same order (each key's
 * value starts from pending's and takes every update in turn), and new keys enter
 * pending in the order first met, as the Python loop's acc[key] = get(key, 0.0) + d
 * does - without a tuple, a float and two dict operations per update. */
#define CHARGE_KEYS 16

typedef struct {
    PyObject *acc; /* pb.pending (borrowed) */
    int direct;    /* too many keys, or a value not a float: acc_add from then on */
    int n;
    struct {
        PyObject *site, *tags; /* borrowed: the holders and entries they come from
                                  outlive the charge */
        double v;
    } keys[CHARGE_KEYS];
} ChargeSums;

/* Write the sums kept so far into acc, in order; then go on directly. */
static int
sums_flush(ChargeSums *cs)
{
    cs->direct = 1;
    for (int i = 0; i < cs->n; i++) {
        PyObject *key = PyTuple_Pack(2, cs->keys[i].site, cs->keys[i].tags);
        PyObject *v = key != NULL ? PyFloat_FromDouble(cs->keys[i].v) : NULL;
        int rc = v != NULL ? PyDict_SetItem(cs->acc, key, v) : -1;
        Py_XDECREF(key);
        Py_XDECREF(v);
        if (rc < 0)
            return -1;
    }
    cs->n = 0;
    return 0;
}

static int
same_key_part(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (a == Py_None || b == Py_None)
        return 0;
    return PyObject_RichCompareBool(a, b, Py_EQ);
}

/* acc[(site, tags)] = acc.get((site, tags), 0.0) + d (or - d). */
static int
sums_add(ChargeSums *cs, PyObject *site, PyObject *tags, double d, int subtract)
{
    if (!cs->direct) {
        for (int i = 0; i < cs->n; i++) {
            int same = same_key_part(cs->keys[i].site, site);
            if (same > 0)
                same = same_key_part(cs->keys[i].tags, tags);
            if (same < 0)
                return -1;
            if (same) {
                cs->keys[i].v = subtract ? cs->keys[i].v - d : cs->keys[i].v + d;
                return 0;
            }
        }
        if (cs->n < CHARGE_KEYS) { /* a key new to this charge: from pending's value */
            PyObject *key = PyTuple_Pack(2, site, tags);
            if (key == NULL)
                return -1;
            PyObject *cur = PyDict_GetItemWithError(cs->acc, key); /* borrowed */
            Py_DECREF(key);
            if (cur == NULL && PyErr_Occurred())
                return -1;
            if (cur == NULL || PyFloat_CheckExact(cur)) {
                double c = cur != NULL ? PyFloat_AS_DOUBLE(cur) : 0.0;
                int i = cs->n++;
                cs->keys[i].site = site;
                cs->keys[i].tags = tags;
                cs->keys[i].v = subtract ? c - d : c + d;
                return 0;
            }
        }
        if (sums_flush(cs) < 0)
            return -1;
    }
    PyObject *key = PyTuple_Pack(2, site, tags);
    if (key == NULL)
        return -1;
    int rc = acc_add(cs->acc, key, d, subtract);
    Py_DECREF(key);
    return rc;
}

/* Attribution._route(pool, tags): its RouteStats (new ref), or NULL - with an exception
 * on error, without one when over MAX_ROUTES. A new route is made by the method. */
static PyObject *
c_route(FolderObject *self, PyObject *pool, PyObject *tags)
{
    PyObject *labels = PyObject_GetAttr(self->attribution, s_labels);
    if (labels == NULL)
        return NULL;
    PyObject *r = NULL, *key = NULL, *routes = NULL;
    int general = !PyDict_CheckExact(labels);
    PyObject *route = s_empty;
    if (!general) {
        PyObject *lab = PyDict_GetItemWithError(labels, tags); /* borrowed */
        if (lab == NULL && PyErr_Occurred())
            goto done;
        if (lab != NULL) {
            if (!PyDict_CheckExact(lab)) {
                general = 1;
            } else {
                PyObject *v = PyDict_GetItemWithError(lab, s_route);
                if (v == NULL && PyErr_Occurred())
                    goto done;
                if (v != NULL)
                    route = v;
            }
        }
    }
    if (!general) {
        routes = PyObject_GetAttr(self->attribution, s_routes);
        if (routes == NULL)
            goto done;
        if (PyDict_CheckExact(routes)) {
            key = PyTuple_Pack(2, pool, route);
            if (key == NULL)
                goto done;
            r = PyDict_GetItemWithError(routes, key);
            if (r == NULL && PyErr_Occurred())
                goto done;
            Py_XINCREF(r);
        }
    }
    if (r == NULL) { /* new (or not the usual types): the method decides */
        r = PyObject_CallMethodObjArgs(self->attribution, s_route_method, pool, tags, NULL);
        if (r == Py_None) {
            Py_DECREF(r);
            r = NULL;
        }
    }
done:
    Py_DECREF(labels);
    Py_XDECREF(routes);
    Py_XDECREF(key);
    return r;
}

static int
python_charge(FolderObject *self, PyObject *pool, double a, PyObject *b, PyObject *holders)
{
    PyObject *av = PyFloat_FromDouble(a);
    if (av == NULL)
        return -1;
    PyObject *res =
        PyObject_CallMethodObjArgs(self->attribution, s_charge, pool, av, b, holders, NULL);
    Py_DECREF(av);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* A float item of a sequence entry (the recent holds', the acquires'), as a double. */
static int
item_double(PyObject *tuple, Py_ssize_t i, double *out)
{
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) <= i) {
        PyErr_SetString(PyExc_TypeError, "attribution: not the entry expected");
        return -1;
    }
    double v = PyFloat_AsDouble(PyTuple_GET_ITEM(tuple, i));
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v;
    return 0;
}

/* Attribution.charge(pool, a, b, holders) for b = t (a float object) and a = t - wait.
 * Inline when the pool already counts its holders, the second is the current one and
 * the wait starts at or after the latest waiting interval (one uncovered part at most);
 * otherwise the method. */
static int
c_charge(FolderObject *self, PyObject *pool, double a, PyObject *b_obj, PyObject *holders)
{
    double b = PyFloat_AS_DOUBLE(b_obj);
    if (!(b - a >= self->wait_min))
        return 0;
    PyObject *pb = PyDict_GetItemWithError(self->blame, pool); /* borrowed */
    if (pb == NULL)
        return PyErr_Occurred() ? -1 : python_charge(self, pool, a, b_obj, holders);
    PyObject *held = NULL, *cover = NULL, *acc = NULL, *it = NULL, *entry = NULL;
    PyObject *av = NULL, *seq = NULL, *waited = NULL;
    int rc = -1;
    held = PyObject_GetAttr(pb, s_held);
    if (held == NULL)
        goto done;
    if (!PyDict_CheckExact(held) || !(b >= 0.0 && b < 9e15)) {
        rc = python_charge(self, pool, a, b_obj, holders);
        goto done;
    }
    PyObject *ps = PyObject_GetAttr(pb, s_pending_sec);
    if (ps == NULL)
        goto done;
    int overflow = 0;
    long long pending_sec = PyLong_Check(ps) ? PyLong_AsLongLongAndOverflow(ps, &overflow) : -1;
    Py_DECREF(ps);
    if (pending_sec == -1 && PyErr_Occurred())
        goto done;
    cover = PyObject_GetAttr(pb, s_cover);
    if (cover == NULL)
        goto done;
    PyObject *last = PyList_CheckExact(cover) && PyList_GET_SIZE(cover) > 0
                         ? PyList_GET_ITEM(cover, PyList_GET_SIZE(cover) - 1)
                         : NULL;
    if (overflow || pending_sec != (long long)b || last == NULL || !PyList_CheckExact(last) ||
        PyList_GET_SIZE(last) != 2 || !PyFloat_CheckExact(PyList_GET_ITEM(last, 0)) ||
        !PyFloat_CheckExact(PyList_GET_ITEM(last, 1)) ||
        a < PyFloat_AS_DOUBLE(PyList_GET_ITEM(last, 0))) {
        rc = python_charge(self, pool, a, b_obj, holders);
        goto done;
    }
    /* _PoolBlame.uncovered's usual case: at or after the latest interval's start. */
    double x, y = b;
    double l1 = PyFloat_AS_DOUBLE(PyList_GET_ITEM(last, 1));
    if (a > l1) {
        av = PyFloat_FromDouble(a);
        PyObject *interval = av != NULL ? PyList_New(2) : NULL;
        if (interval == NULL)
            goto done;
        PyList_SET_ITEM(interval, 0, new_ref(av));
        PyList_SET_ITEM(interval, 1, new_ref(b_obj));
        int r = PyList_Append(cover, interval);
        Py_DECREF(interval);
        if (r < 0)
            goto done;
        if (PyList_GET_SIZE(cover) > self->cover_kept &&
            PyList_SetSlice(cover, 0, 1, NULL) < 0)
            goto done;
        x = a;
    } else if (b <= l1) {
        rc = 0; /* covered already: nothing charged */
        goto done;
    } else {
        x = l1;
        PyList_SetItem(last, 1, new_ref(b_obj)); /* steals */
    }
    if (PyObject_SetAttr(pb, s_last_wait, b_obj) < 0)
        goto report;
    acc = PyObject_GetAttr(pb, s_pending);
    if (acc == NULL)
        goto report;
    if (!PyDict_CheckExact(acc)) {
        PyErr_SetString(PyExc_TypeError, "pending: not a dict");
        goto report;
    }
    ChargeSums sums;
    sums.acc = acc;
    sums.direct = 0;
    sums.n = 0;
    double span = y - x;
    double total = 0.0 + span;
    /* Every key held meanwhile: its count times the span. */
    Py_ssize_t pos = 0;
    PyObject *key, *n;
    while (PyDict_Next(held, &pos, &key, &n)) {
        long count = PyLong_AsLong(n);
        if (count == -1 && PyErr_Occurred())
            goto report;
        if (!PyTuple_CheckExact(key) || PyTuple_GET_SIZE(key) != 2) {
            PyErr_SetString(PyExc_TypeError, "held: not a (site, tags) key");
            goto report;
        }
        if (sums_add(&sums, PyTuple_GET_ITEM(key, 0), PyTuple_GET_ITEM(key, 1),
                     (double)count * span, 0) < 0)
            goto report;
    }
    /* Holders acquired after x held only from their acquire on. */
    seq = PyObject_GetAttr(pb, s_acquired);
    it = seq != NULL ? PyObject_CallOneArg((PyObject *)&PyReversed_Type, seq) : NULL;
    if (it == NULL)
        goto report;
    while ((entry = PyIter_Next(it)) != NULL) {
        double since;
        if (item_double(entry, 0, &since) < 0)
            goto report;
        if (since <= x)
            break;
        PyObject *fresh = PyTuple_GET_ITEM(entry, 1);
        if (fresh != Py_None) {
            PyObject *conn = holder_get(self, fresh, H_CONN);
            if (conn == NULL) {
                if (!PyErr_ExceptionMatches(PyExc_AttributeError))
                    goto report;
                PyErr_Clear();
                conn = s_empty;
            }
            PyObject *now = PyDict_GetItemWithError(holders, conn);
            if (now == NULL && PyErr_Occurred())
                goto report;
            if (now == fresh) {
                PyObject *site = holder_get(self, fresh, H_SITE);
                PyObject *tags = site != NULL ? holder_get(self, fresh, H_TAGS) : NULL;
                if (tags == NULL)
                    goto report;
                double m = y < since ? y : since; /* min(since, y) */
                if (sums_add(&sums, site, tags, m - x, 1) < 0)
                    goto report;
            }
        }
        Py_CLEAR(entry);
    }
    Py_CLEAR(entry);
    if (PyErr_Occurred())
        goto report;
    Py_CLEAR(it);
    Py_CLEAR(seq);
    /* Holds that ended during it: their overlap. */
    double slack;
    if (get_double(pb, s_disorder, &slack) < 0)
        goto report;
    seq = PyObject_GetAttr(pb, s_recent);
    it = seq != NULL ? PyObject_CallOneArg((PyObject *)&PyReversed_Type, seq) : NULL;
    if (it == NULL)
        goto report;
    Py_ssize_t scanned = 0;
    while (scanned < self->recent_scan && (entry = PyIter_Next(it)) != NULL) {
        scanned++;
        double s0, e;
        if (item_double(entry, 0, &s0) < 0 || item_double(entry, 1, &e) < 0)
            goto report;
        if (PyTuple_GET_SIZE(entry) < 4) {
            PyErr_SetString(PyExc_TypeError, "recent: not an ended hold");
            goto report;
        }
        if (e <= x) {
            if (e <= x - slack) /* ended holds come in order of their end (or nearly) */
                break;
            Py_CLEAR(entry);
            continue;
        }
        double overlap = (y < e ? y : e) - (x > s0 ? x : s0); /* min(e, y) - max(s, x) */
        if (overlap > 0 && sums_add(&sums, PyTuple_GET_ITEM(entry, 2),
                                    PyTuple_GET_ITEM(entry, 3), overlap, 0) < 0)
            goto report;
        Py_CLEAR(entry);
    }
    Py_CLEAR(entry);
    if (PyErr_Occurred() || sums_flush(&sums) < 0)
        goto report;
    /* self.waited[pool] += total; pb.pending_wait += total */
    waited = PyObject_GetAttr(self->attribution, s_waited);
    if (waited == NULL || acc_add(waited, pool, total, 0) < 0)
        goto report;
    {
        PyObject *tv = PyFloat_FromDouble(total);
        int r = tv != NULL ? attr_add(pb, s_pending_wait, tv) : -1;
        Py_XDECREF(tv);
        if (r < 0)
            goto report;
    }
    rc = 0;
    goto done;
report: /* the charge is part-booked: told, as any fold error */
    report(self->errors, s_fold);
    rc = 0;
done:
    Py_XDECREF(held);
    Py_XDECREF(cover);
    Py_XDECREF(acc);
    Py_XDECREF(it);
    Py_XDECREF(entry);
    Py_XDECREF(av);
    Py_XDECREF(seq);
    Py_XDECREF(waited);
    return rc;
}

/* Attribution.on_acquire: the route's use, the holder counted (while the pool counts),
 * the wait charged. ``pb``/``counting`` as blame_of found them. */
static int
c_on_acquire(FolderObject *self, PyObject *pool, PyObject *t, double td, PyObject *w,
             PyObject *tags, PyObject *holders, PyObject *h, PyObject *replaced, PyObject *pb,
             int counting)
{
    double wd = PyFloat_AS_DOUBLE(w);
    int waited = wd >= self->wait_min;
    if (tags != Py_None) {
        PyObject *r = c_route(self, pool, tags);
        if (r == NULL && PyErr_Occurred())
            return -1;
        if (r != NULL) {
            int rc = attr_add(r, s_acquires, s_one);
            if (rc == 0 && waited) {
                rc = attr_add(r, s_waits, s_one);
                if (rc == 0)
                    rc = attr_add(r, s_waited, w);
            }
            Py_DECREF(r);
            if (rc < 0)
                return -1;
        }
    }
    if (counting && count_acquire(self, pb, t, td, h, replaced) < 0)
        return -1;
    if (waited)
        return c_charge(self, pool, td - wd, t, holders);
    return 0;
}

/* Histogram.add_trusted(value) in C for an exact Histogram whose fields have their
 * usual types: the same operations in the same order (the bucket, count, sum, min,
 * max), so the same results to the bit. 1 done, 0 not the usual case (nothing
 * changed: the caller calls the method), -1 error. */
static int
hist_add_trusted(FolderObject *self, PyObject *hist, PyObject *value)
{
    if (self->hist_type == NULL || (PyObject *)Py_TYPE(hist) != self->hist_type ||
        !PyFloat_CheckExact(value))
        return 0;
    double v = PyFloat_AS_DOUBLE(value);
    PyObject *buckets = NULL, *count = NULL, *sum = NULL, *mn = NULL, *mx = NULL;
    PyObject *k = NULL, *n = NULL, *n1 = NULL, *c1 = NULL, *s1 = NULL;
    int rc = -1;
    if ((buckets = PyObject_GetAttr(hist, s_buckets)) == NULL ||
        (count = PyObject_GetAttr(hist, s_count)) == NULL ||
        (sum = PyObject_GetAttr(hist, s_sum)) == NULL ||
        (mn = PyObject_GetAttr(hist, s_min)) == NULL || (mx = PyObject_GetAttr(hist, s_max)) == NULL)
        goto done;
    if (!PyDict_CheckExact(buckets) || !PyLong_CheckExact(count) || !PyFloat_CheckExact(sum) ||
        !PyFloat_CheckExact(mn) || !PyFloat_CheckExact(mx)) {
        rc = 0;
        goto done;
    }
    PyObject *edges = self->hist_edges;
    Py_ssize_t ne = PyList_GET_SIZE(edges); /* > 0: checked at init */
    double top = PyFloat_AS_DOUBLE(PyList_GET_ITEM(edges, ne - 1));
    if (self->hist_min < v && v <= top) {
        Py_ssize_t lo = 0, hi = ne;
        while (lo < hi) { /* bisect_left */
            Py_ssize_t mid = (lo + hi) / 2;
            if (PyFloat_AS_DOUBLE(PyList_GET_ITEM(edges, mid)) < v)
                lo = mid + 1;
            else
                hi = mid;
        }
        k = PyLong_FromSsize_t((Py_ssize_t)self->hist_lowest + lo);
    } else {
        k = PyObject_CallOneArg(self->hist_bucket_of, value);
    }
    if (k == NULL)
        goto done;
    n = PyDict_GetItemWithError(buckets, k);
    if (n == NULL && PyErr_Occurred())
        goto done;
    n1 = n != NULL ? PyNumber_Add(n, s_one) : new_ref(s_one);
    if (n1 == NULL || PyDict_SetItem(buckets, k, n1) < 0)
        goto done;
    if ((c1 = PyNumber_Add(count, s_one)) == NULL || PyObject_SetAttr(hist, s_count, c1) < 0)
        goto done;
    if ((s1 = PyFloat_FromDouble(PyFloat_AS_DOUBLE(sum) + v)) == NULL ||
        PyObject_SetAttr(hist, s_sum, s1) < 0)
        goto done;
    if (v < PyFloat_AS_DOUBLE(mn) && PyObject_SetAttr(hist, s_min, value) < 0)
        goto done;
    if (v > PyFloat_AS_DOUBLE(mx) && PyObject_SetAttr(hist, s_max, value) < 0)
        goto done;
    rc = 1;
done:
    Py_XDECREF(buckets);
    Py_XDECREF(count);
    Py_XDECREF(sum);
    Py_XDECREF(mn);
    Py_XDECREF(mx);
    Py_XDECREF(k);
    Py_XDECREF(n1);
    Py_XDECREF(c1);
    Py_XDECREF(s1);
    return rc;
}

/* on_release's last step for a labelled holder: its route's hold histogram. */
static int
c_route_hold(FolderObject *self, PyObject *pool, PyObject *tags, PyObject *hold)
{
    PyObject *r = c_route(self, pool, tags);
    if (r == NULL)
        return PyErr_Occurred() ? -1 : 0;
    PyObject *hist = PyObject_GetAttr(r, s_hold);
    Py_DECREF(r);
    if (hist == NULL)
        return -1;
    int done = hist_add_trusted(self, hist, hold);
    if (done != 0) {
        Py_DECREF(hist);
        return done < 0 ? -1 : 0;
    }
    PyObject *res = PyObject_CallMethodOneArg(hist, s_add_trusted, hold);
    Py_DECREF(hist);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* The route of a web request's labels when tags_id and request_name need not be called
 * to know it: labels of a class accel._fast_labels() vouches for (RequestLabels'
 * items, own, route and request_name as they are), no parent, the route found
 * (``_route``, a non-empty str: route() then only returns it). Borrowed, or NULL with
 * no exception: call the Python functions. */
static PyObject *
fast_route(FolderObject *self, PyObject *labels)
{
    if (self->fast_labels == NULL || self->tag_ids == NULL)
        return NULL;
    int known = 0;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(self->fast_labels); i++)
        known |= (PyObject *)Py_TYPE(labels) == PyTuple_GET_ITEM(self->fast_labels, i);
    if (!known)
        return NULL;
    PyObject *parent = PyObject_GetAttr(labels, s_parent);
    if (parent == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(parent);
    if (parent != Py_None)
        return NULL;
    PyObject *route = PyObject_GetAttr(labels, s__route);
    if (route == NULL) {
        PyErr_Clear();
        return NULL;
    }
    Py_DECREF(route); /* the labels keep it */
    if (!PyUnicode_CheckExact(route) || PyUnicode_GET_LENGTH(route) == 0)
        return NULL;
    return route;
}

static int
has_char(PyObject *text, Py_UCS4 ch)
{
    Py_ssize_t at = PyUnicode_FindChar(text, ch, 0, PyUnicode_GET_LENGTH(text), 1);
    return at == -2 ? -1 : at >= 0;
}

/* redact.plain: no '=', no ':', and no '-' followed somewhere by a blank (1), else 0;
 * -1 with an exception. */
static int
plain_name(PyObject *text)
{
    int eq = has_char(text, '='), colon = eq ? eq : has_char(text, ':');
    if (eq || colon)
        return eq < 0 || colon < 0 ? -1 : 0;
    int dash = has_char(text, '-');
    if (dash <= 0)
        return dash < 0 ? -1 : 1;
    int space = has_char(text, ' '), tab = space ? space : has_char(text, '\t');
    if (space < 0 || tab < 0)
        return -1;
    return !(space || tab);
}

/* The holder's name as the stream carries it: a pair named at the acquire (held_by),
 * else named once per batch (``names``, keyed as in drain.py: by id, a thread by its
 * negated ident); redacted through naming's cache. New refs in *task, *ref. */
static int
name_holder(FolderObject *self, PyObject *names, PyObject *holder, PyObject *labels,
            PyObject **task, PyObject **ref)
{
    PyObject *named = PyTuple_CheckExact(holder) ? holder : NULL;
    if (named == NULL) {
        PyObject *key = PyLong_CheckExact(holder) ? PyNumber_Negative(holder)
                                                  : PyLong_FromVoidPtr(holder);
        if (key == NULL)
            return -1;
        named = PyDict_GetItemWithError(names, key);
        if (named == NULL) {
            if (PyErr_Occurred()) {
                Py_DECREF(key);
                return -1;
            }
            named = PyObject_CallOneArg(self->holder_name, holder);
            if (named == NULL || PyDict_SetItem(names, key, named) < 0) {
                Py_XDECREF(named);
                Py_DECREF(key);
                return -1;
            }
            Py_DECREF(named); /* names keeps it */
        }
        Py_DECREF(key);
    }
    if (!PyTuple_CheckExact(named) || PyTuple_GET_SIZE(named) != 2) {
        PyErr_SetString(PyExc_TypeError, "holder_name: not a pair");
        return -1;
    }
    PyObject *name = PyTuple_GET_ITEM(named, 0);
    PyObject *request = NULL;
    if (labels != NULL) { /* a web request's holder is named after it */
        PyObject *known = fast_route(self, labels);
        request = known != NULL ? new_ref(known) : PyObject_CallOneArg(self->request_name, labels);
        if (request == NULL)
            return -1;
        int truthy = PyObject_IsTrue(request);
        if (truthy < 0) {
            Py_DECREF(request);
            return -1;
        }
        if (truthy)
            name = request;
    }
    PyObject *out = PyUnicode_CheckExact(name) ? PyDict_GetItemWithError(self->redacted, name)
                                               : NULL;
    if (out != NULL) {
        Py_INCREF(out);
    } else if (!PyErr_Occurred()) {
        int is_plain = PyUnicode_CheckExact(name) ? plain_name(name) : 0;
        if (is_plain < 0)
            out = NULL;
        else if (is_plain) /* redacted_name's own shortcut: the name as it is, uncached */
            out = new_ref(name);
        else
            out = PyObject_CallOneArg(self->redacted_name, name);
    }
    Py_XDECREF(request);
    if (out == NULL)
        return -1;
    *task = out;
    *ref = new_ref(PyTuple_GET_ITEM(named, 1));
    return 0;
}

/* -- the two hot lines, as events.encode_acquire / encode_release make them ----------
 * Byte for byte the same: floats by repr (_shortest.h, else PyOS_double_to_string 'r', as
 * float.__repr__),
 * ints in decimal, strings JSON-escaped through events._escaped (the Python cache;
 * events._quoted fills it). NULL with no exception when the values are not the usual
 * ones (a non-finite float, a long line, ...): the caller calls the Python function. */

typedef struct {
    char buf[1024];
    Py_ssize_t n;
    int overflow;
} Line;

static void
line_put(Line *ln, const char *text, Py_ssize_t len)
{
    if (ln->overflow || ln->n + len > (Py_ssize_t)sizeof(ln->buf)) {
        ln->overflow = 1;
        return;
    }
    memcpy(ln->buf + ln->n, text, (size_t)len);
    ln->n += len;
}

#define LINE_LIT(ln, lit) line_put((ln), (lit), (Py_ssize_t)(sizeof(lit) - 1))

static int
line_float(Line *ln, PyObject *v)
{
    if (!PyFloat_CheckExact(v) || !isfinite(PyFloat_AS_DOUBLE(v)))
        return 0;
    char fast[40];
    int len = shortest_repr(PyFloat_AS_DOUBLE(v), fast);
    if (len >= 0) {
        line_put(ln, fast, len);
        return 1;
    }
    char *r = PyOS_double_to_string(PyFloat_AS_DOUBLE(v), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
    if (r == NULL)
        return -1;
    line_put(ln, r, (Py_ssize_t)strlen(r));
    PyMem_Free(r);
    return 1;
}

static int
line_int(Line *ln, PyObject *v)
{
    if (!PyLong_CheckExact(v))
        return 0;
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow)
        return 0;
    if (x == -1 && PyErr_Occurred())
        return -1;
    char tmp[32];
    int len = snprintf(tmp, sizeof(tmp), "%lld", x);
    line_put(ln, tmp, len);
    return 1;
}

static int
line_str(FolderObject *self, Line *ln, PyObject *v)
{
    if (!PyUnicode_CheckExact(v))
        return 0;
    PyObject *q = PyDict_GetItemWithError(self->escaped, v);
    if (q != NULL) {
        Py_INCREF(q);
    } else {
        if (PyErr_Occurred())
            return -1;
        q = PyObject_CallOneArg(self->quoted, v);
        if (q == NULL)
            return -1;
    }
    Py_ssize_t len;
    const char *text = PyUnicode_Check(q) ? PyUnicode_AsUTF8AndSize(q, &len) : NULL;
    if (text == NULL) {
        Py_DECREF(q);
        return PyErr_Occurred() ? -1 : 0;
    }
    line_put(ln, text, len);
    Py_DECREF(q);
    return 1;
}

static PyObject *
line_bytes(Line *ln)
{
    if (ln->overflow)
        return NULL;
    return PyBytes_FromStringAndSize(ln->buf, ln->n);
}

#define LINE_TRY(call)                                                                     \
    do {                                                                                   \
        int rc_ = (call);                                                                  \
        if (rc_ <= 0)                                                                      \
            return NULL;                                                                   \
    } while (0)

static PyObject *
c_encode_acquire(FolderObject *self, PyObject *t, PyObject *pool, PyObject *conn,
                 PyObject *wait, PyObject *site, PyObject *task, PyObject *tags)
{
    Line ln;
    ln.n = 0;
    ln.overflow = 0;
    LINE_LIT(&ln, "{\"type\":\"acquire\",\"t\":");
    LINE_TRY(line_float(&ln, t));
    LINE_LIT(&ln, ",\"pool\":");
    LINE_TRY(line_str(self, &ln, pool));
    LINE_LIT(&ln, ",\"conn\":");
    LINE_TRY(line_str(self, &ln, conn));
    LINE_LIT(&ln, ",\"wait\":");
    LINE_TRY(line_float(&ln, wait));
    LINE_LIT(&ln, ",\"site\":");
    if (site == Py_None)
        LINE_LIT(&ln, "null");
    else
        LINE_TRY(line_int(&ln, site));
    LINE_LIT(&ln, ",\"task\":");
    LINE_TRY(line_str(self, &ln, task));
    if (tags != Py_None) {
        LINE_LIT(&ln, ",\"tags\":");
        LINE_TRY(line_int(&ln, tags));
    }
    LINE_LIT(&ln, "}\n");
    return line_bytes(&ln);
}

static PyObject *
c_encode_release(FolderObject *self, PyObject *t, PyObject *pool, PyObject *conn,
                 PyObject *hold)
{
    Line ln;
    ln.n = 0;
    ln.overflow = 0;
    LINE_LIT(&ln, "{\"type\":\"release\",\"t\":");
    LINE_TRY(line_float(&ln, t));
    LINE_LIT(&ln, ",\"pool\":");
    LINE_TRY(line_str(self, &ln, pool));
    LINE_LIT(&ln, ",\"conn\":");
    LINE_TRY(line_str(self, &ln, conn));
    LINE_LIT(&ln, ",\"hold\":");
    LINE_TRY(line_float(&ln, hold));
    LINE_LIT(&ln, "}\n");
    return line_bytes(&ln);
}

/* One acquire record. 1 folded, 0 not the usual case (nothing changed), -1 error
 * before any change (nothing changed either: the caller lets Python take it). */
static int
fold_acquire(FolderObject *self, PoolCache *pc, PyObject *item, PyObject *offset,
             PyObject *names, PyObject *lines, PyObject *events, double *t_out)
{
    if (PyTuple_GET_SIZE(item) != 8)
        return 0;
    PyObject *mono = PyTuple_GET_ITEM(item, 1), *pool = PyTuple_GET_ITEM(item, 2),
             *conn = PyTuple_GET_ITEM(item, 3), *wait = PyTuple_GET_ITEM(item, 4),
             *raw_site = PyTuple_GET_ITEM(item, 5), *holder = PyTuple_GET_ITEM(item, 6),
             *labels = PyTuple_GET_ITEM(item, 7);
    if (!PyFloat_CheckExact(mono) || !PyFloat_CheckExact(wait))
        return 0;
    PyObject *site = Py_None;
    int truthy = PyObject_IsTrue(raw_site);
    if (truthy < 0)
        return -1;
    if (truthy) {
        site = PyDict_GetItemWithError(self->site_ids, raw_site); /* raises if unhashable */
        if (site == NULL)
            return PyErr_Occurred() ? -1 : 0; /* a new site: its event goes first */
    }
    int usual = cache_load(self, pc, pool);
    if (usual <= 0)
        return usual;
    PyObject *holders = pc->holders;
    PyObject *c = NULL, *task = NULL, *ref = NULL, *t = NULL, *w = NULL, *h = NULL;
    PyObject *tid = NULL;
    int rc = -1;
    if (labels != Py_None) {
        /* The labels' id, as interner.tags_id makes it (a new one queues its event,
         * which goes before this acquire: the Python loop sends it, and finds the id
         * made). None for labels with no pairs: the acquire is then untagged. */
        PyObject *route = fast_route(self, labels);
        if (route != NULL) { /* items() is (("route", route),): a known id is looked up */
            PyObject *pair = PyTuple_Pack(2, s_route, route);
            PyObject *key = pair != NULL ? PyTuple_Pack(1, pair) : NULL;
            Py_XDECREF(pair);
            if (key == NULL)
                goto done;
            tid = PyDict_GetItemWithError(self->tag_ids, key);
            Py_DECREF(key);
            Py_XINCREF(tid);
            if (tid == NULL && PyErr_Occurred())
                goto done;
        }
        if (tid == NULL) /* a new label set (its event is made there), or not known */
            tid = PyObject_CallOneArg(self->tags_id, labels);
        if (tid == NULL)
            goto done;
        if (PyList_GET_SIZE(self->pending) != 0) {
            rc = 0;
            goto done;
        }
    }
    PyObject *tags = tid != NULL ? tid : Py_None;
    c = PyUnicode_CheckExact(conn) ? new_ref(conn) : PyObject_Str(conn);
    if (c == NULL)
        goto done;
    if (PyDict_GET_SIZE(holders) >= self->max_holders) {
        int has = PyDict_Contains(holders, c);
        if (has <= 0) {
            rc = has; /* over MAX_HOLDERS: the Python path */
            goto done;
        }
    }
    if (name_holder(self, names, holder, tags != Py_None ? labels : NULL, &task, &ref) < 0)
        goto done;
    double td = PyFloat_AS_DOUBLE(mono) + PyFloat_AS_DOUBLE(offset);
    t = PyFloat_FromDouble(td);
    w = PyFloat_AS_DOUBLE(wait) > 0.0 ? new_ref(wait) : new_ref(s_zero);
    if (t == NULL)
        goto done;
    /* Checked: from here on the model changes. */
    rc = 1;
    *t_out = td;
    cache_saw(pc, td);
    pc->acquires++;
    if (PyList_Append(pc->waits, w) < 0)
        goto report;
    PyObject *replaced = PyDict_GetItemWithError(holders, c); /* borrowed */
    Py_XINCREF(replaced);
    PyObject *values[H_LEAK] = {c, t, site, task, tags, mono, raw_site, ref};
    h = new_holder(self, values);
    if (h == NULL || PyDict_SetItem(holders, c, h) < 0) {
        Py_XDECREF(replaced);
        goto report;
    }
    PyObject *pb;
    int counting = blame_of(self, pool, &pb);
    if (counting < 0) {
        Py_XDECREF(replaced);
        goto report;
    }
    if ((counting || tags != Py_None || PyFloat_AS_DOUBLE(w) >= self->wait_min) &&
        c_on_acquire(self, pool, t, td, w, tags, holders, h, replaced, pb, counting) < 0) {
        Py_XDECREF(replaced);
        goto report;
    }
    Py_XDECREF(replaced);
    goto encode;
report:
    report(self->errors, s_fold);
encode:
    if (lines != Py_None) {
        PyObject *line = c_encode_acquire(self, t, pool, c, wait, site, task, tags);
        if (line == NULL && !PyErr_Occurred()) { /* not the usual values: Python's */
            PyObject *args[7] = {t, pool, c, wait, site, task, tags};
            line = PyObject_Vectorcall(self->encode_acquire, args, 7, NULL);
        }
        if (line == NULL || PyList_Append(lines, line) < 0)
            report(self->errors, s_encode);
        Py_XDECREF(line);
    }
    if (events != Py_None) {
        PyObject *ev = PyDict_New();
        if (ev == NULL || PyDict_SetItem(ev, s_type, str_acquire) < 0 ||
            PyDict_SetItem(ev, s_t, t) < 0 || PyDict_SetItem(ev, s_pool, pool) < 0 ||
            PyDict_SetItem(ev, s_conn, c) < 0 || PyDict_SetItem(ev, s_wait, wait) < 0 ||
            PyDict_SetItem(ev, s_site, site) < 0 || PyDict_SetItem(ev, s_task, task) < 0 ||
            (tags != Py_None && PyDict_SetItem(ev, s_tags, tags) < 0) ||
            PyList_Append(events, ev) < 0)
            report(self->errors, s_fold);
        Py_XDECREF(ev);
    }
done:
    Py_XDECREF(tid);
    Py_XDECREF(c);
    Py_XDECREF(task);
    Py_XDECREF(ref);
    Py_XDECREF(t);
    Py_XDECREF(w);
    Py_XDECREF(h);
    return rc;
}

/* Attribution.on_release for a holder, inline when the holder has no labels: uncounted
 * if the pool counts its holders, and its ended hold kept to charge later waits. */
static int
on_release(FolderObject *self, PyObject *pool, PyObject *h, PyObject *t, double td,
           PyObject *hold)
{
    PyObject *pb;
    int counting = blame_of(self, pool, &pb);
    if (counting < 0)
        return -1;
    PyObject *tags = holder_get(self, h, H_TAGS);
    if (tags == NULL)
        return -1;
    if (pb == NULL) {
        PyObject *args[5] = {self->attribution, pool, h, t, hold};
        PyObject *res = PyObject_VectorcallMethod(s_on_release, args,
                                                  5 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_XDECREF(res);
        return res == NULL ? -1 : 0;
    }
    if (counting) {
        PyObject *held = PyObject_GetAttr(pb, s_held);
        if (held == NULL)
            return -1;
        int rc = count_holder(self, held, h, -1);
        Py_DECREF(held);
        if (rc < 0)
            return -1;
    }
    double last_end;
    if (get_double(pb, s_last_end, &last_end) < 0)
        return -1;
    if (td < last_end) { /* out of order: look that much further back (at most 1 s) */
        double disorder;
        if (get_double(pb, s_disorder, &disorder) < 0)
            return -1;
        double d = last_end - td > disorder ? last_end - td : disorder;
        PyObject *dv = PyFloat_FromDouble(d < 1.0 ? d : 1.0);
        int rc = dv != NULL ? PyObject_SetAttr(pb, s_disorder, dv) : -1;
        Py_XDECREF(dv);
        if (rc < 0)
            return -1;
    } else if (PyObject_SetAttr(pb, s_last_end, t) < 0) {
        return -1;
    }
    PyObject *since = holder_get(self, h, H_SINCE);
    PyObject *site = since != NULL ? holder_get(self, h, H_SITE) : NULL;
    if (site == NULL)
        return -1;
    PyObject *recent = PyObject_GetAttr(pb, s_recent);
    if (recent == NULL)
        return -1;
    PyObject *entry = PyTuple_Pack(4, since, t, site, tags);
    if (entry != NULL)
        PyObject_GC_UnTrack(entry); /* numbers and None */
    PyObject *res = entry != NULL ? PyObject_CallMethodOneArg(recent, s_append, entry) : NULL;
    Py_XDECREF(entry);
    if (res == NULL) {
        Py_DECREF(recent);
        return -1;
    }
    Py_DECREF(res);
    /* if recent[0][1] < t - HORIZON: recent.popleft() (the maxlen bounds it too) */
    PyObject *first = PySequence_GetItem(recent, 0);
    int rc = 0;
    if (first == NULL) {
        rc = -1;
    } else {
        PyObject *end = PyTuple_Check(first) && PyTuple_GET_SIZE(first) > 1
                            ? PyTuple_GET_ITEM(first, 1)
                            : NULL;
        if (end == NULL || !PyFloat_CheckExact(end)) {
            PyErr_SetString(PyExc_TypeError, "recent: not an ended hold");
            rc = -1;
        } else if (PyFloat_AS_DOUBLE(end) < td - 300.0 /* attribution.HORIZON */) {
            PyObject *r = PyObject_CallMethodNoArgs(recent, s_popleft);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(first);
    }
    Py_DECREF(recent);
    if (rc == 0 && tags != Py_None) /* its route's hold */
        rc = c_route_hold(self, pool, tags, hold);
    return rc;
}

static int
fold_release(FolderObject *self, PoolCache *pc, PyObject *item, PyObject *offset,
             PyObject *lines, PyObject *events, double *t_out)
{
    if (PyTuple_GET_SIZE(item) != 5)
        return 0;
    PyObject *mono = PyTuple_GET_ITEM(item, 1), *pool = PyTuple_GET_ITEM(item, 2),
             *conn = PyTuple_GET_ITEM(item, 3), *hold = PyTuple_GET_ITEM(item, 4);
    if (!PyFloat_CheckExact(mono) || !(hold == Py_None || PyFloat_CheckExact(hold)))
        return 0;
    int usual = cache_load(self, pc, pool);
    if (usual <= 0)
        return usual;
    PyObject *holders = pc->holders;
    PyObject *c = NULL, *t = NULL, *h = NULL, *held = NULL, *hh = NULL;
    int rc = -1;
    c = PyUnicode_CheckExact(conn) ? new_ref(conn) : PyObject_Str(conn);
    if (c == NULL)
        goto done;
    h = PyDict_GetItemWithError(holders, c);
    if (h == NULL && PyErr_Occurred())
        goto done;
    Py_XINCREF(h);
    double hold_d = 0.0;
    if (h != NULL) {
        PyObject *leak = holder_get(self, h, H_LEAK);
        if (leak == NULL)
            goto done;
        int reported = PyObject_IsTrue(leak);
        if (reported) { /* -1 or 1: an unleak goes first, in Python */
            rc = reported < 0 ? -1 : 0;
            goto done;
        }
        if (hold == Py_None) {
            PyObject *hm = holder_get(self, h, H_MONO);
            if (hm == NULL)
                goto done;
            if (!PyFloat_CheckExact(hm)) {
                rc = 0;
                goto done;
            }
            double m = PyFloat_AS_DOUBLE(hm);
            hold_d = m != 0.0 ? PyFloat_AS_DOUBLE(mono) - m : 0.0;
        }
    }
    if (hold == Py_None) {
        held = PyFloat_FromDouble(hold_d);
    } else {
        held = new_ref(hold);
        hold_d = PyFloat_AS_DOUBLE(hold);
    }
    double td = PyFloat_AS_DOUBLE(mono) + PyFloat_AS_DOUBLE(offset);
    t = PyFloat_FromDouble(td);
    if (held == NULL || t == NULL)
        goto done;
    hh = hold_d > 0.0 ? new_ref(held) : new_ref(s_zero);
    /* Checked: from here on the model changes. */
    rc = 1;
    *t_out = td;
    if (h != NULL && (PyDict_DelItem(holders, c) < 0 || let_go(self, h) < 0))
        goto report;
    cache_saw(pc, td);
    pc->releases++;
    if (PyList_Append(pc->holds, hh) < 0)
        goto report;
    if (h != NULL && on_release(self, pool, h, t, td, hh) < 0)
        goto report;
    goto encode;
report:
    report(self->errors, s_fold);
encode:
    if (lines != Py_None) {
        PyObject *line = c_encode_release(self, t, pool, c, held);
        if (line == NULL && !PyErr_Occurred()) {
            PyObject *args[4] = {t, pool, c, held};
            line = PyObject_Vectorcall(self->encode_release, args, 4, NULL);
        }
        if (line == NULL || PyList_Append(lines, line) < 0)
            report(self->errors, s_encode);
        Py_XDECREF(line);
    }
    if (events != Py_None) {
        PyObject *ev = PyDict_New();
        if (ev == NULL || PyDict_SetItem(ev, s_type, str_release) < 0 ||
            PyDict_SetItem(ev, s_t, t) < 0 || PyDict_SetItem(ev, s_pool, pool) < 0 ||
            PyDict_SetItem(ev, s_conn, c) < 0 || PyDict_SetItem(ev, s_hold, held) < 0 ||
            PyList_Append(events, ev) < 0)
            report(self->errors, s_fold);
        Py_XDECREF(ev);
    }
done:
    Py_XDECREF(c);
    Py_XDECREF(t);
    Py_XDECREF(h);
    Py_XDECREF(held);
    Py_XDECREF(hh);
    return rc;
}

/* run(items, start, offset, names, lines, events) -> (stop, folded, t_first, t_last) */
static PyObject *
Folder_run(FolderObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6 || !PyList_CheckExact(args[0]) || !PyFloat_CheckExact(args[2]) ||
        !PyDict_CheckExact(args[3]) || (args[4] != Py_None && !PyList_CheckExact(args[4])) ||
        (args[5] != Py_None && !PyList_CheckExact(args[5]))) {
        PyErr_SetString(PyExc_TypeError,
                        "run(items: list, start: int, offset: float, names: dict, "
                        "lines: list | None, events: list | None)");
        return NULL;
    }
    PyObject *items = args[0], *offset = args[2], *names = args[3], *lines = args[4],
             *events = args[5];
    Py_ssize_t i = PyLong_AsSsize_t(args[1]);
    if (i == -1 && PyErr_Occurred())
        return NULL;
    if (i < 0)
        i = 0;
    Py_ssize_t n = 0;
    double t_first = 0.0, t_last = 0.0;
    /* Only when no site or tags event waits: those go before the acquire that made
     * them (the Python loop sends them). */
    PoolCache pc = {0};
    if (PyList_GET_SIZE(self->pending) == 0) {
        for (; i < PyList_GET_SIZE(items); i++) {
            PyObject *item = PyList_GET_ITEM(items, i);
            if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) < 1)
                break;
            PyObject *kind = PyTuple_GET_ITEM(item, 0);
            double t = 0.0;
            int rc;
            Py_INCREF(item);
            if (kind == str_acquire)
                rc = fold_acquire(self, &pc, item, offset, names, lines, events, &t);
            else if (kind == str_release)
                rc = fold_release(self, &pc, item, offset, lines, events, &t);
            else
                rc = 0;
            Py_DECREF(item);
            if (rc <= 0) {
                PyErr_Clear(); /* the Python loop body takes it, and reports what it finds */
                break;
            }
            if (n == 0)
                t_first = t;
            n++;
            if (t > t_last)
                t_last = t;
        }
    }
    if (cache_flush(&pc) < 0) /* the counters of the last pool, into the model */
        report(self->errors, s_fold);
    return Py_BuildValue("(nndd)", i, n, t_first, t_last);
}

static int
Folder_traverse(FolderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->pools);
    Py_VISIT(self->holder);
    Py_VISIT(self->attribution);
    Py_VISIT(self->blame);
    Py_VISIT(self->site_ids);
    Py_VISIT(self->pending);
    Py_VISIT(self->holder_name);
    Py_VISIT(self->redacted);
    Py_VISIT(self->redacted_name);
    Py_VISIT(self->tags_id);
    Py_VISIT(self->request_name);
    Py_VISIT(self->hist_type);
    Py_VISIT(self->hist_edges);
    Py_VISIT(self->hist_bucket_of);
    Py_VISIT(self->tag_ids);
    Py_VISIT(self->fast_labels);
    Py_VISIT(self->encode_acquire);
    Py_VISIT(self->encode_release);
    Py_VISIT(self->escaped);
    Py_VISIT(self->quoted);
    Py_VISIT(self->errors);
    return 0;
}

static int
Folder_clear(FolderObject *self)
{
    Py_CLEAR(self->pools);
    Py_CLEAR(self->holder);
    Py_CLEAR(self->attribution);
    Py_CLEAR(self->blame);
    Py_CLEAR(self->site_ids);
    Py_CLEAR(self->pending);
    Py_CLEAR(self->holder_name);
    Py_CLEAR(self->redacted);
    Py_CLEAR(self->redacted_name);
    Py_CLEAR(self->tags_id);
    Py_CLEAR(self->request_name);
    Py_CLEAR(self->hist_type);
    Py_CLEAR(self->hist_edges);
    Py_CLEAR(self->hist_bucket_of);
    Py_CLEAR(self->tag_ids);
    Py_CLEAR(self->fast_labels);
    Py_CLEAR(self->encode_acquire);
    Py_CLEAR(self->encode_release);
    Py_CLEAR(self->escaped);
    Py_CLEAR(self->quoted);
    Py_CLEAR(self->errors);
    return 0;
}

static void
Folder_dealloc(FolderObject *self)
{
    PyObject_GC_UnTrack(self);
    Folder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Folder_init(FolderObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"pools", "holder", "attribution", "blame", "site_ids",
                             "pending", "holder_name", "redacted", "redacted_name", "tags_id",
                             "request_name", "encode_acquire", "encode_release", "escaped",
                             "quoted", "errors", "max_holders",
                             "wait_min", "horizon", "calm", "cover_kept", "recent_scan",
                             "tag_ids", "fast_labels", NULL};
    PyObject *pools, *holder, *attribution, *blame, *site_ids, *pending, *holder_name,
        *redacted, *redacted_name, *tags_id, *request_name, *encode_acquire, *encode_release,
        *escaped, *quoted, *errors;
    Py_ssize_t max_holders;
    double wait_min, horizon, calm;
    Py_ssize_t cover_kept, recent_scan;
    PyObject *tag_ids = NULL, *fast_labels = NULL;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "O!O!OO!O!O!OO!OOOOOO!OOndddnn|O!O!", kwlist, &PyDict_Type, &pools,
            &PyType_Type, &holder, &attribution, &PyDict_Type, &blame, &PyDict_Type,
            &site_ids, &PyList_Type, &pending, &holder_name, &PyDict_Type, &redacted,
            &redacted_name, &tags_id, &request_name, &encode_acquire, &encode_release,
            &PyDict_Type, &escaped, &quoted, &errors, &max_holders, &wait_min, &horizon, &calm,
            &cover_kept, &recent_scan, &PyDict_Type, &tag_ids, &PyTuple_Type, &fast_labels))
        return -1;
    if (cover_kept < 1 || recent_scan < 1) {
        PyErr_SetString(PyExc_ValueError, "cover_kept and recent_scan must be positive");
        return -1;
    }
    if (horizon != 300.0) { /* compiled in: on_release's inline path */
        PyErr_SetString(PyExc_ValueError, "attribution.HORIZON changed: rebuild _accel");
        return -1;
    }
    Folder_clear(self);
    /* The Holder's slots, if it is the slotted dataclass it is meant to be. */
    for (int i = 0; i < HOLDER_FIELDS; i++) {
        self->offsets[i] = -1;
    }
    int slotted = 1;
    Py_ssize_t offs[HOLDER_FIELDS];
    for (int i = 0; i < HOLDER_FIELDS && slotted; i++) {
        PyObject *d = PyObject_GetAttrString(holder, holder_fields[i]);
        if (d == NULL) {
            PyErr_Clear();
            slotted = 0;
            break;
        }
        if (Py_TYPE(d) == &PyMemberDescr_Type &&
            ((PyMemberDescrObject *)d)->d_member->type == T_OBJECT_EX &&
            ((PyMemberDescrObject *)d)->d_common.d_type == (PyTypeObject *)holder) {
            offs[i] = ((PyMemberDescrObject *)d)->d_member->offset;
        } else {
            slotted = 0;
        }
        Py_DECREF(d);
    }
    if (slotted) {
        for (int i = 0; i < HOLDER_FIELDS; i++)
            self->offsets[i] = offs[i];
    }
#define KEEP(field) (self->field = new_ref(field))
    KEEP(pools);
    self->holder = (PyTypeObject *)new_ref(holder);
    KEEP(attribution);
    KEEP(blame);
    KEEP(site_ids);
    KEEP(pending);
    KEEP(holder_name);
    KEEP(redacted);
    KEEP(redacted_name);
    KEEP(tags_id);
    KEEP(request_name);
    KEEP(encode_acquire);
    KEEP(encode_release);
    KEEP(escaped);
    KEEP(quoted);
    KEEP(errors);
#undef KEEP
    self->max_holders = max_holders;
    self->wait_min = wait_min;
    self->calm = calm;
    self->cover_kept = cover_kept;
    self->recent_scan = recent_scan;
    self->tag_ids = tag_ids != NULL ? new_ref(tag_ids) : NULL;
    self->fast_labels = fast_labels != NULL ? new_ref(fast_labels) : NULL;
    /* Histogram.add_trusted's constants; without them (a changed module) the method. */
    PyObject *hm = PyImport_ImportModule("poolscope.histogram");
    if (hm != NULL) {
        self->hist_type = PyObject_GetAttrString(hm, "Histogram");
        self->hist_edges = PyObject_GetAttrString(hm, "_EDGES");
        self->hist_bucket_of = PyObject_GetAttrString(hm, "bucket_of");
        PyObject *lowest = PyObject_GetAttrString(hm, "_LOWEST");
        PyObject *minv = PyObject_GetAttrString(hm, "MIN_VALUE");
        /* _TOP is _EDGES[-1]: hist_add_trusted reads it there. */
        int ok = self->hist_type && self->hist_edges && self->hist_bucket_of && lowest &&
                 minv && PyList_CheckExact(self->hist_edges) &&
                 PyList_GET_SIZE(self->hist_edges) > 0 && PyLong_CheckExact(lowest) &&
                 PyFloat_CheckExact(minv);
        for (Py_ssize_t i = 0; ok && i < PyList_GET_SIZE(self->hist_edges); i++)
            ok = PyFloat_CheckExact(PyList_GET_ITEM(self->hist_edges, i));
        if (ok) {
            self->hist_lowest = PyLong_AsLong(lowest);
            self->hist_min = PyFloat_AS_DOUBLE(minv);
        }
        Py_XDECREF(lowest);
        Py_XDECREF(minv);
        Py_DECREF(hm);
        if (!ok || PyErr_Occurred()) {
            PyErr_Clear();
            Py_CLEAR(self->hist_type); /* the method is called */
        }
    } else {
        PyErr_Clear();
    }
    return 0;
}

static PyObject *
Folder_slotted(FolderObject *self, void *closure)
{
    return PyBool_FromLong(self->offsets[0] >= 0);
}

static PyGetSetDef Folder_getset[] = {
    {"slotted", (getter)Folder_slotted, NULL,
     "Whether holders are made in their slots (else by calling the class).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Folder_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Folder_run, METH_FASTCALL,
     "run(items, start, offset, names, lines, events) -> (stop, folded, t_first, t_last)"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FolderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "poolscope.instrument._accel.Folder",
    .tp_basicsize = sizeof(FolderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The drain's fold of usual acquire and release records, for one model.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Folder_init,
    .tp_dealloc = (destructor)Folder_dealloc,
    .tp_traverse = (traverseproc)Folder_traverse,
    .tp_clear = (inquiry)Folder_clear,
    .tp_methods = Folder_methods,
    .tp_getset = Folder_getset,
};

/* bucket_counts(edges, values) -> {index: count} | None: histogram.add_many_trusted's
 * ``_count_elements(counts, map(partial(bisect_left, edges), values))`` in one C loop
 * (the same binary search, so the same index for every value, NaN included); None
 * when a value or an edge is not a float (the caller counts those in Python). */
static PyObject *
accel_bucket_counts(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyList_CheckExact(args[0]) || !PyList_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "bucket_counts(edges: list, values: list)");
        return NULL;
    }
    PyObject *edges_list = args[0], *values = args[1];
    Py_ssize_t ne = PyList_GET_SIZE(edges_list), nv = PyList_GET_SIZE(values);
    if (ne > 4096)
        Py_RETURN_NONE;
    double edges[4096];
    for (Py_ssize_t k = 0; k < ne; k++) {
        PyObject *e = PyList_GET_ITEM(edges_list, k);
        if (!PyFloat_CheckExact(e))
            Py_RETURN_NONE;
        edges[k] = PyFloat_AS_DOUBLE(e);
    }
    Py_ssize_t counts[4097];
    memset(counts, 0, sizeof(Py_ssize_t) * (size_t)(ne + 1));
    for (Py_ssize_t j = 0; j < nv; j++) {
        PyObject *v = PyList_GET_ITEM(values, j);
        if (!PyFloat_CheckExact(v))
            Py_RETURN_NONE;
        double x = PyFloat_AS_DOUBLE(v);
        Py_ssize_t lo = 0, hi = ne;
        while (lo < hi) { /* bisect_left: the first edge not below x */
            Py_ssize_t mid = (lo + hi) / 2;
            if (edges[mid] < x)
                lo = mid + 1;
            else
                hi = mid;
        }
        counts[lo]++;
    }
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k <= ne; k++) {
        if (!counts[k])
            continue;
        PyObject *key = PyLong_FromSsize_t(k), *n = PyLong_FromSsize_t(counts[k]);
        if (key == NULL || n == NULL || PyDict_SetItem(out, key, n) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(n);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(n);
    }
    return out;
}

/* shortest_repr(x) -> repr(x), or None where Grisu3 leaves it to CPython's dtoa: for
 * the test that compares the two. */
static PyObject *
accel_shortest_repr(PyObject *module, PyObject *arg)
{
    double d = PyFloat_AsDouble(arg);
    if (d == -1.0 && PyErr_Occurred())
        return NULL;
    if (!isfinite(d))
        Py_RETURN_NONE;
    char out[40];
    int len = shortest_repr(d, out);
    if (len < 0)
        Py_RETURN_NONE;
    return PyUnicode_FromStringAndSize(out, len);
}

static PyMethodDef module_methods[] = {
    {"shortest_repr", (PyCFunction)accel_shortest_repr, METH_O,
     "shortest_repr(x) -> repr(x) by Grisu3, or None where it falls back to dtoa."},
    {"bucket_counts", (PyCFunction)(void (*)(void))accel_bucket_counts, METH_FASTCALL,
     "bucket_counts(edges, values) -> {bisect_left index: count}, or None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef accel_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "poolscope.instrument._accel",
    .m_doc = "poolscope's optional C accelerator for the pool handles' hot path.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__accel(void)
{
    str_acquire = PyUnicode_InternFromString("acquire");
    str_release = PyUnicode_InternFromString("release");
    str_dropped = PyUnicode_InternFromString("dropped");
    str_report = PyUnicode_InternFromString("report");
    str_where_recorder = PyUnicode_InternFromString("recorder");
    str_where_site = PyUnicode_InternFromString("site capture");
    str_get_name = PyUnicode_InternFromString("get_name");
    if (!str_acquire || !str_release || !str_dropped || !str_report || !str_where_recorder ||
        !str_where_site || !str_get_name)
        return NULL;
    if (PyType_Ready(&HotType) < 0 || PyType_Ready(&FolderType) < 0)
        return NULL;
#define NAME(var, text)                                                                    \
    if ((var = PyUnicode_InternFromString(text)) == NULL)                                  \
        return NULL;
    NAME(s_last_t, "last_t");
    NAME(s_acquires, "acquires");
    NAME(s_releases, "releases");
    NAME(s_recent, "recent");
    NAME(s_pending_waits, "pending_waits");
    NAME(s_pending_holds, "pending_holds");
    NAME(s_holders, "holders");
    NAME(s_held, "held");
    NAME(s_last_wait, "last_wait");
    NAME(s_acquired, "acquired");
    NAME(s_calm, "calm");
    NAME(s_last_end, "last_end");
    NAME(s_disorder, "disorder");
    NAME(s_on_release, "on_release");
    NAME(s_append, "append");
    NAME(s_popleft, "popleft");
    NAME(s_type, "type");
    NAME(s_t, "t");
    NAME(s_pool, "pool");
    NAME(s_conn, "conn");
    NAME(s_wait, "wait");
    NAME(s_site, "site");
    NAME(s_task, "task");
    NAME(s_hold, "hold");
    NAME(s_fold, "fold");
    NAME(s_encode, "encode");
    NAME(s_tags, "tags");
    NAME(s_labels, "labels");
    NAME(s_routes, "routes");
    NAME(s_route, "route");
    NAME(s_route_method, "_route");
    NAME(s_waits, "waits");
    NAME(s_waited, "waited");
    NAME(s_add_trusted, "add_trusted");
    NAME(s_cover, "cover");
    NAME(s_pending, "pending");
    NAME(s_pending_sec, "pending_sec");
    NAME(s_pending_wait, "pending_wait");
    NAME(s_charge, "charge");
    NAME(s_empty, "");
    NAME(s_buckets, "buckets");
    NAME(s__route, "_route");
    NAME(s_parent, "parent");
    NAME(s_count, "count");
    NAME(s_sum, "sum");
    NAME(s_min, "min");
    NAME(s_max, "max");
#undef NAME
    if ((s_one = PyLong_FromLong(1)) == NULL)
        return NULL;
    if ((s_zero = PyFloat_FromDouble(0.0)) == NULL)
        return NULL;
    PyObject *m = PyModule_Create(&accel_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&HotType);
    if (PyModule_AddObject(m, "Hot", (PyObject *)&HotType) < 0) {
        Py_DECREF(&HotType);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&FolderType);
    if (PyModule_AddObject(m, "Folder", (PyObject *)&FolderType) < 0) {
        Py_DECREF(&FolderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
