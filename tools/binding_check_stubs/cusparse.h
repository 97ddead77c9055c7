// Stand-in for cuSPARSE's header (tools/binding_check.py).
#pragma once
typedef struct cusparseContext* cusparseHandle_t;
typedef int cusparseStatus_t;
