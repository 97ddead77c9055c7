// Stand-in for cuSOLVER's common header (tools/binding_check.py).
#pragma once
typedef int cusolverStatus_t;
