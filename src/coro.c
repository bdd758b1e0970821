/* coro: see coro.h. */
#include "coro.h"
