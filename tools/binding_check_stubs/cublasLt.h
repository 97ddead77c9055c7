// Stand-in for cuBLASLt's header (tools/binding_check.py).
#pragma once
typedef struct cublasLtContext* cublasLtHandle_t;
