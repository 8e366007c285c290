/* The tables build.py generates (frozen.c, inittab.c). */
#ifndef QEMUSER_FROZEN_H
#define QEMUSER_FROZEN_H
#include <Python.h>
extern const struct _frozen qemuser_frozen[];  /* every Python module, marshalled */
extern struct _inittab qemuser_inittab[];      /* the extension modules compiled in */
#endif
