// GPT-2's MLP matmuls with cuBLASLt's GELU epilogues (fp16/bf16, CUDA), registered as torch ops gpt2_fused::* so
// that the autograd.Function in fused_dense.py and torch.compile can call them.
//
// cuBLASLt is column-major: a row-major PyTorch matrix [r, c] is the column-major matrix c x r. Each op below
// names the column-major product it asks for; `m`, `n`, `k` are cuBLASLt's.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <cublasLt.h>

namespace {

#define LT_CHECK(expr)                                                                              \
  do {                                                                                              \
    cublasStatus_t status_ = (expr);                                                                \
    TORCH_CHECK(status_ == CUBLAS_STATUS_SUCCESS, #expr " failed: ", cublasLtGetStatusString(status_)); \
  } while (0)

cudaDataType_t cuda_dtype(const at::Tensor& t) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf,
              "gpt2_fused ops take bfloat16 or float16 tensors, got ", t.scalar_type());
  return t.scalar_type() == at::kBFloat16 ? CUDA_R_16BF : CUDA_R_16F;
}

void check_matrix(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.dim() == 2 && t.is_contiguous(), name, " must be a contiguous 2-D CUDA tensor");
  TORCH_CHECK(t.size(1) % 8 == 0, name, ": the inner dimension must be a multiple of 8, got ", t.size(1));
}

// The largest power of two up to 256 that divides the address. cuBLASLt's heuristic assumes 256-byte aligned
// matrices unless told otherwise (as PyTorch tells it for its own matmuls); DeepSpeed's parameters are views
// into flat buffers and need not be.
uint32_t alignment_of(const void* ptr) {
  uint32_t alignment = 256;
  while (reinterpret_cast<uintptr_t>(ptr) % alignment != 0) alignment /= 2;
  return alignment;
}

// Owns the descriptors of one call.
struct LtMatmul {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtMatmul() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

// D (m x n, leading dimension ldd) = op(A) op(B), with `epilogue` reading or writing `bias` and `aux`.
void lt_matmul(cublasOperation_t trans_a, cublasOperation_t trans_b, int64_t m, int64_t n, int64_t k,
               const void* A, int64_t lda, const void* B, int64_t ldb, void* D, int64_t ldd, cudaDataType_t dtype,
               cublasLtEpilogue_t epilogue, const void* bias, void* aux, int64_t ldaux, int64_t idx, int64_t* count) {
  LtMatmul mm;
  LT_CHECK(cublasLtMatmulDescCreate(&mm.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  LT_CHECK(cublasLtMatmulDescSetAttribute(mm.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(mm.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  LT_CHECK(cublasLtMatmulDescSetAttribute(mm.op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
  if (bias != nullptr) {
    LT_CHECK(cublasLtMatmulDescSetAttribute(mm.op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (aux != nullptr) {
    LT_CHECK(cublasLtMatmulDescSetAttribute(mm.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &aux, sizeof(aux)));
    LT_CHECK(cublasLtMatmulDescSetAttribute(mm.op, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ldaux, sizeof(ldaux)));
  }
  LT_CHECK(cublasLtMatrixLayoutCreate(&mm.a, dtype, trans_a == CUBLAS_OP_N ? m : k, trans_a == CUBLAS_OP_N ? k : m,
                                      lda));
  LT_CHECK(cublasLtMatrixLayoutCreate(&mm.b, dtype, trans_b == CUBLAS_OP_N ? k : n, trans_b == CUBLAS_OP_N ? n : k,
                                      ldb));
  LT_CHECK(cublasLtMatrixLayoutCreate(&mm.d, dtype, m, n, ldd));

  // PyTorch's own cuBLASLt workspace for this stream: no allocation per call.
  size_t workspace_size = at::cuda::getCUDABlasLtWorkspaceSize();
  void* workspace = at::cuda::getCUDABlasLtWorkspace();
  LT_CHECK(cublasLtMatmulPreferenceCreate(&mm.pref));
  LT_CHECK(cublasLtMatmulPreferenceSetAttribute(mm.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_size,
                                                sizeof(workspace_size)));
  const std::pair<cublasLtMatmulPreferenceAttributes_t, const void*> matrices[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, A}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, B},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, D}, {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, D}};
  for (const auto& [attribute, ptr] : matrices) {
    const uint32_t alignment = alignment_of(ptr);
    LT_CHECK(cublasLtMatmulPreferenceSetAttribute(mm.pref, attribute, &alignment, sizeof(alignment)));
  }
  cublasLtHandle_t handle = at::cuda::getCurrentCUDABlasLtHandle();
  cublasLtMatmulHeuristicResult_t heuristics[32] = {};
  int found = 0;
  LT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle, mm.op, mm.a, mm.b, mm.d, mm.d, mm.pref, 32, heuristics, &found));
  *count = found;
  TORCH_CHECK(idx < found, "no algorithm ", idx);
  auto& heuristic = heuristics[idx];
  const float one = 1.0f, zero = 0.0f;
  LT_CHECK(cublasLtMatmul(handle, mm.op, &one, A, mm.a, B, mm.b, &zero, D, mm.d, D, mm.d, &heuristic.algo, workspace,
                         workspace_size, at::cuda::getCurrentCUDAStream()));
}

// Forward of c_fc + GELU: x [M, K], weight [N, K], bias [N] -> (gelu(x W^T + b), x W^T + b), both [M, N].
// Column-major: D (N x M) = W (op T of the K x N storage) * x (K x M).
std::tuple<at::Tensor, at::Tensor, int64_t> linear_gelu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t idx) {
  int64_t count = 0;
  check_matrix(x, "x");
  check_matrix(weight, "weight");
  TORCH_CHECK(x.size(1) == weight.size(1) && bias.numel() == weight.size(0) && bias.is_contiguous(),
              "linear_gelu: shapes do not match");
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t M = x.size(0), K = x.size(1), N = weight.size(0);
  TORCH_CHECK(N % 8 == 0, "linear_gelu: output features must be a multiple of 8");
  at::Tensor out = at::empty({M, N}, x.options());
  at::Tensor pre_gelu = at::empty({M, N}, x.options());
  lt_matmul(CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, weight.data_ptr(), K, x.data_ptr(), K, out.data_ptr(), N,
            cuda_dtype(x), CUBLASLT_EPILOGUE_GELU_AUX_BIAS, bias.data_ptr(), pre_gelu.data_ptr(), N, idx, &count);
  return {out, pre_gelu, count};
}

// Backward through c_proj's input and the GELU: grad_out [M, N2], weight [N2, N] (c_proj's), pre_gelu [M, N]
// -> gradient at the GELU's input, (grad_out W) * gelu'(pre_gelu), [M, N]. (DGELU_BGRAD would add the bias
// gradient, but on an H100 cuBLASLt runs it as a separate, slower epilogue kernel: bench/NOTES.md.)
// Column-major: D (N x M) = W (N x N2 storage, op N) * grad_out (N2 x M).
std::tuple<at::Tensor, int64_t> linear_dgelu(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& pre_gelu, int64_t idx) {
  int64_t count = 0;
  check_matrix(grad_out, "grad_out");
  check_matrix(weight, "weight");
  check_matrix(pre_gelu, "pre_gelu");
  const int64_t M = grad_out.size(0), N2 = grad_out.size(1), N = weight.size(1);
  TORCH_CHECK(weight.size(0) == N2 && pre_gelu.size(0) == M && pre_gelu.size(1) == N,
              "linear_dgelu: shapes do not match");
  c10::cuda::CUDAGuard guard(grad_out.device());
  at::Tensor grad_pre = at::empty({M, N}, grad_out.options());
  lt_matmul(CUBLAS_OP_N, CUBLAS_OP_N, N, M, N2, weight.data_ptr(), N, grad_out.data_ptr(), N2, grad_pre.data_ptr(),
            N, cuda_dtype(grad_out), CUBLASLT_EPILOGUE_DGELU, nullptr, pre_gelu.data_ptr(), N, idx, &count);
  return {grad_pre, count};
}

}  // namespace

TORCH_LIBRARY(gpt2_sweep, m) {
  m.def("linear_gelu(Tensor x, Tensor weight, Tensor bias, int idx) -> (Tensor, Tensor, int)");
  m.def("linear_dgelu(Tensor grad_out, Tensor weight, Tensor pre_gelu, int idx) -> (Tensor, int)");
}

TORCH_LIBRARY_IMPL(gpt2_sweep, CUDA, m) {
  m.impl("linear_gelu", &linear_gelu);
  m.impl("linear_dgelu", &linear_dgelu);
}
