#ifndef FERRY_HEADERS_H
#define FERRY_HEADERS_H
#endif
