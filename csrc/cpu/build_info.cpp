// Which kernel families this build contains (queried from Python for routing).
namespace flashinfer_ops {
bool gpu_kernels_built() {
#ifdef TFO_WITH_GPU_KERNELS
  return true;
#else
  return false;
#endif
}
}  // namespace flashinfer_ops
