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
#include <time.h>

static PyObject *str_acquire;  /* "acquire", interned */
static PyObject *str_release;  /* "release", interned */
static PyObject *str_dropped;  /* "dropped" */
static PyObject *str_report;   /* "report" */
static PyObject *str_where_recorder;
static PyObject *str_where_site;

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
} HotObject;

static void
report(HotObject *self, PyObject *where)
{
    /* Hand the pending exception to errors.report; never let one escape. */
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (value == NULL) {
        Py_XDECREF(type);
        Py_XDECREF(tb);
        return;
    }
    PyObject *fn = PyObject_GetAttr(self->errors, str_report);
    if (fn != NULL) {
        PyObject *args[2] = {where, value};
        PyObject *res = PyObject_Vectorcall(fn, args, 2, NULL);
        Py_XDECREF(res);
        Py_DECREF(fn);
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
                          new_ref(a[3]),        current_tags(self)};
    if (push(self, items, 8) < 0)
        report(self, str_where_recorder);
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
        report(self, str_where_recorder);
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
        report(self, str_where_site);
        site = new_ref(Py_None);
    }
    PyObject *t = (a[2] != NULL && a[2] != Py_None) ? new_ref(a[2]) : now(self);
    PyObject *items[8] = {new_ref(str_acquire),
                          t,
                          new_ref(self->pool_name),
                          new_ref(a[0]),
                          new_ref(a[1]),
                          site,
                          holder_task(self, a[3]),
                          current_tags(self)};
    if (push(self, items, 8) < 0)
        report(self, str_where_recorder);
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
                             "intern", "current_task", "tasks_by_loop", NULL};
    PyObject *recorder, *buf, *pool_name, *tags_var, *errors, *clock, *code_index,
        *code_internal, *intern, *current_task, *tasks_by_loop;
    Py_ssize_t cap;
    int depth;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOnUOOOiO!OOOO", kwlist, &recorder, &buf,
                                     &cap, &pool_name, &tags_var, &errors, &clock, &depth,
                                     &PyDict_Type, &code_index, &code_internal, &intern,
                                     &current_task, &tasks_by_loop))
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
#undef KEEP
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

static PyObject *
accel_perf_counter(PyObject *module, PyObject *unused)
{
    return PyFloat_FromDouble(perf_counter());
}

static PyMethodDef module_methods[] = {
    {"perf_counter", accel_perf_counter, METH_NOARGS,
     "CLOCK_MONOTONIC as float seconds: what the records carry when no clock is given."},
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
    if (!str_acquire || !str_release || !str_dropped || !str_report || !str_where_recorder ||
        !str_where_site)
        return NULL;
    if (PyType_Ready(&HotType) < 0)
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
    return m;
}
