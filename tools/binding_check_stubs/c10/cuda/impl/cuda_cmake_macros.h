// Stand-in for the file a CUDA build of PyTorch generates (tools/binding_check.py).
#pragma once
#define C10_CUDA_BUILD_SHARED_LIBS
