// Stand-in for cuSOLVER's dense header (tools/binding_check.py).
#pragma once
typedef struct cusolverDnContext* cusolverDnHandle_t;
