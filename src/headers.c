/* headers: see headers.h. */
#include "headers.h"
