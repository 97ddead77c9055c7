// The prefill instantiation list: TFO_PREFILL_FOR_EACH_CONFIG(X) calls X(T, kHeadDim) once per
// element type and head dim this build serves. Each X instantiates prefill_kernel for a single
// request, for planned batches over contiguous and over paged K/V, and merge_partials_kernel.
// Build knobs (setup.py): TFO_HEAD_DIM_{64,128,256}, TFO_DTYPE_{F16,BF16}; with none of a kind
// defined, all of that kind are built.
#pragma once

#include "gpu_iface/vec_types.h"

#if !defined(TFO_HEAD_DIM_64) && !defined(TFO_HEAD_DIM_128) && !defined(TFO_HEAD_DIM_256)
#define TFO_PREFILL_ALL_HEAD_DIMS 1
#endif
#if !defined(TFO_DTYPE_F16) && !defined(TFO_DTYPE_BF16)
#define TFO_PREFILL_ALL_DTYPES 1
#endif

#if defined(TFO_HEAD_DIM_64) || defined(TFO_PREFILL_ALL_HEAD_DIMS)
#define TFO_PREFILL_D64(X, T) X(T, 64)
#else
#define TFO_PREFILL_D64(X, T)
#endif
#if defined(TFO_HEAD_DIM_128) || defined(TFO_PREFILL_ALL_HEAD_DIMS)
#define TFO_PREFILL_D128(X, T) X(T, 128)
#else
#define TFO_PREFILL_D128(X, T)
#endif
#if defined(TFO_HEAD_DIM_256) || defined(TFO_PREFILL_ALL_HEAD_DIMS)
#define TFO_PREFILL_D256(X, T) X(T, 256)
#else
#define TFO_PREFILL_D256(X, T)
#endif
#define TFO_PREFILL_HEAD_DIMS(X, T) TFO_PREFILL_D64(X, T) TFO_PREFILL_D128(X, T) TFO_PREFILL_D256(X, T)

#if defined(TFO_DTYPE_F16) || defined(TFO_PREFILL_ALL_DTYPES)
#define TFO_PREFILL_F16(X) TFO_PREFILL_HEAD_DIMS(X, ::tfo::gpu::half_t)
#else
#define TFO_PREFILL_F16(X)
#endif
#if defined(TFO_DTYPE_BF16) || defined(TFO_PREFILL_ALL_DTYPES)
#define TFO_PREFILL_BF16(X) TFO_PREFILL_HEAD_DIMS(X, ::tfo::gpu::bf16_t)
#else
#define TFO_PREFILL_BF16(X)
#endif

#define TFO_PREFILL_FOR_EACH_CONFIG(X) TFO_PREFILL_F16(X) TFO_PREFILL_BF16(X)
