/* http1: see http1.h. */
#include "http1.h"
