/* io: see io.h. */
#include "io.h"
