// Stand-in for cuBLAS's header, which PyTorch's CUDA headers include and the bindings do not use
// (tools/binding_check.py).
#pragma once
typedef struct cublasContext* cublasHandle_t;
typedef int cublasStatus_t;
