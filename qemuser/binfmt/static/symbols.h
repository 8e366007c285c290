/* The table build.py generates (symbols.c): C functions ctypes may ask for, by name. */
#ifndef QEMUSER_SYMBOLS_H
#define QEMUSER_SYMBOLS_H
struct qemuser_symbol {
    const char *name;
    void *address;
};
extern const struct qemuser_symbol qemuser_symbols[];
#endif
