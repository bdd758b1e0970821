#ifndef FERRY_HTTP1_H
#define FERRY_HTTP1_H
#endif
