// One kernel: does the card run a binary built with this GPU code? Prints the CUDA error when it cannot.
// Built three ways by benchmarks/gpu_probe.sh (SASS 8.6 only as in MXNet 1.9.1's wheels, SASS + PTX 8.6, SASS 9.0).
#include <chrono>
#include <cstdio>
#include <cuda_runtime.h>
__global__ void fill(float* x, int n) { int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] = 2.0f * i; }
int main() {
  float* d; const int n = 1024;
  cudaError_t e = cudaMalloc(&d, n * sizeof(float));
  if (e != cudaSuccess) { printf("cudaMalloc: %s\n", cudaGetErrorString(e)); return 2; }
  auto t0 = std::chrono::steady_clock::now();
  fill<<<4, 256>>>(d, n);
  e = cudaGetLastError();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  if (e != cudaSuccess) { printf("kernel: %s (%s)\n", cudaGetErrorName(e), cudaGetErrorString(e)); return 1; }
  float h[4]; cudaMemcpy(h, d + n - 4, sizeof h, cudaMemcpyDeviceToHost);
  printf("kernel ran: x[1023] = %.0f, first launch %.1f ms\n", h[3], ms); return 0;
}
