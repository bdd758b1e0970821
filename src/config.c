/* config: see config.h. */
#include "config.h"
