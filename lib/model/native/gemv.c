/*
 * Single-row products y = W x for batch-1 decoding on the `tensorflow` backend (lib/model/native_gemv.ts).
 *
 * Decoding one sequence multiplies one row by every weight matrix once per token: the step reads all the
 * weights (1.98 GB for Qwen2.5-0.5B in float32) and is bound by memory bandwidth, not arithmetic. So:
 * - float32 weights: one pass over W, FMA into several accumulators per row;
 * - 2-byte weights (bfloat16 / float16, `weightsDtype`): W is read as stored (half the bytes) and widened
 *   to float32 in registers; products and sums stay float32, so the result is the product of the widened
 *   weight (what TensorFlow computes after its Cast), up to summation order.
 *
 * Threads: the machines this runs on are often small and shared (2 cores, other processes training), where
 * OpenMP's default spin-waiting workers collapse (measured 544 ms per decode step instead of 101 ms with
 * passive waiting). This file has its own pool of pthreads that sleep on a condition variable between
 * calls: no thread ever spins. Small products run on the calling thread alone (waking a worker costs more
 * than the work). `MEDTHINK_NATIVE_THREADS` sets the number of threads (default: the online cores, at most 8:
 * a memory-bound loop gains nothing beyond the memory channels).
 *
 * Built by `deno task setup:tensorflow` (scripts/setup_tensorflow.ts -> buildNativeGemv) with `cc -O3
 * -march=native`; the AVX-512, AVX2 and plain C branches below are chosen at compile time.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------------------------------------------- */
/* Kernels over rows [r0, r1). */

static inline float widen_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static float widen_f16_scalar(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff, u;
  if (e == 0) {
    if (m == 0) {
      u = sign;
    } else { /* subnormal: normalise */
      e = 127 - 15 + 1;
      while (!(m & 0x400)) {
        m <<= 1;
        e--;
      }
      u = sign | (e << 23) | ((m & 0x3ff) << 13);
    }
  } else if (e == 31) {
    u = sign | 0x7f800000 | (m << 13);
  } else {
    u = sign | ((e + 127 - 15) << 23) | (m << 13);
  }
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static inline float dot_f32(const float *restrict x, const float *restrict w, int64_t K) {
  {
    int64_t k = 0;
    float s = 0;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(),
           a3 = _mm512_setzero_ps();
    for (; k + 64 <= K; k += 64) {
      a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), a0);
      a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_loadu_ps(w + k + 16), a1);
      a2 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 32), _mm512_loadu_ps(w + k + 32), a2);
      a3 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 48), _mm512_loadu_ps(w + k + 48), a3);
    }
    for (; k + 16 <= K; k += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_loadu_ps(w + k), a0);
    s = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
#elif defined(__AVX2__) && defined(__FMA__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(),
           a3 = _mm256_setzero_ps();
    for (; k + 32 <= K; k += 32) {
      a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), a0);
      a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), _mm256_loadu_ps(w + k + 8), a1);
      a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 16), _mm256_loadu_ps(w + k + 16), a2);
      a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 24), _mm256_loadu_ps(w + k + 24), a3);
    }
    for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_loadu_ps(w + k), a0);
    __m256 t = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    s = _mm_cvtss_f32(h);
#else
    float acc[8] = {0};
    for (; k + 8 <= K; k += 8)
      for (int j = 0; j < 8; j++) acc[j] += x[k + j] * w[k + j];
    for (int j = 0; j < 8; j++) s += acc[j];
#endif
    for (; k < K; k++) s += x[k] * w[k];
    return s;
  }
}

static void rows_f32(const float *restrict x, const float *restrict W, float *restrict y, int64_t K,
                     int64_t r0, int64_t r1) {
  for (int64_t n = r0; n < r1; n++) y[n] = dot_f32(x, W + n * K, K);
}

/* kind 0: bfloat16, 1: float16. */
static inline float dot_half(const float *restrict x, const uint16_t *restrict w, int64_t K, int kind) {
  {
    int64_t k = 0;
    float s = 0;
#if defined(__AVX512F__)
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    if (kind == 0) {
      for (; k + 32 <= K; k += 32) {
        __m512i h0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k)));
        __m512i h1 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + k + 16)));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), _mm512_castsi512_ps(_mm512_slli_epi32(h0, 16)), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), _mm512_castsi512_ps(_mm512_slli_epi32(h1, 16)), a1);
      }
    } else {
      for (; k + 32 <= K; k += 32) {
        __m512 w0 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + k)));
        __m512 w1 = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + k + 16)));
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k), w0, a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + k + 16), w1, a1);
      }
    }
    s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    if (kind == 0) {
      for (; k + 16 <= K; k += 16) {
        __m256i h0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k)));
        __m256i h1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(w + k + 8)));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), _mm256_castsi256_ps(_mm256_slli_epi32(h0, 16)), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), _mm256_castsi256_ps(_mm256_slli_epi32(h1, 16)), a1);
      }
    } else {
      for (; k + 16 <= K; k += 16) {
        __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k)));
        __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + k + 8)));
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k), w0, a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + k + 8), w1, a1);
      }
    }
    __m256 t = _mm256_add_ps(a0, a1);
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
    s = _mm_cvtss_f32(h);
#endif
    if (kind == 0)
      for (; k < K; k++) s += x[k] * widen_bf16(w[k]);
    else
      for (; k < K; k++) s += x[k] * widen_f16_scalar(w[k]);
    return s;
  }
}

static void rows_half(const float *restrict x, const uint16_t *restrict W, float *restrict y, int64_t K,
                      int64_t r0, int64_t r1, int kind) {
  for (int64_t n = r0; n < r1; n++) y[n] = dot_half(x, W + n * K, K, kind);
}

/* One row of W (float32, or 2-byte codes of `kind`) times x. */
static inline float dot_row(const float *x, const void *W, int kind, int64_t n, int64_t K) {
  return kind < 0 ? dot_f32(x, (const float *)W + n * K, K) : dot_half(x, (const uint16_t *)W + n * K, K, kind);
}

/* ---------------------------------------------------------------------------------------------------- */
/* A pool of sleeping workers: each call hands every thread a contiguous share of the job's rows. */

/* A product of up to 3 matrices by one x (rows numbered through all of them), each with an optional bias
 * and residual; or (glu) silu(Wg x) * (Wu x) row by row. */
typedef struct {
  const void *W;
  const float *bias, *residual;
  float *y;
  int64_t N;
  int kind; /* -1: float32, 0: bfloat16, 1: float16 */
} seg_t;

typedef struct {
  const float *x;
  int64_t K, N; /* N: rows in all */
  int nseg, glu;
  seg_t seg[3];
} job_t;

static void run_rows(const job_t *j, int64_t r0, int64_t r1) {
  if (j->glu) {
    const seg_t *g = &j->seg[0], *u = &j->seg[1];
    for (int64_t n = r0; n < r1; n++) {
      float a = dot_row(j->x, g->W, g->kind, n, j->K), b = dot_row(j->x, u->W, u->kind, n, j->K);
      g->y[n] = a / (1.0f + expf(-a)) * b;
    }
    return;
  }
  int64_t base = 0;
  for (int i = 0; i < j->nseg; i++) {
    const seg_t *s = &j->seg[i];
    int64_t a = r0 > base ? r0 - base : 0, b = r1 - base < s->N ? r1 - base : s->N;
    if (a < b) {
      if (s->kind < 0)
        rows_f32(j->x, (const float *)s->W, s->y, j->K, a, b);
      else
        rows_half(j->x, (const uint16_t *)s->W, s->y, j->K, a, b, s->kind);
      if (s->bias)
        for (int64_t n = a; n < b; n++) s->y[n] += s->bias[n];
      if (s->residual)
        for (int64_t n = a; n < b; n++) s->y[n] = s->residual[n] + s->y[n];
    }
    base += s->N;
  }
}

#define MAX_THREADS 8
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER, done_cv = PTHREAD_COND_INITIALIZER;
static job_t job;
static uint64_t generation = 0;
static int pending = 0, nthreads = 0;

static void run_share(const job_t *j, int t, int parts) {
  /* Shares rounded to 16 rows, so that no two threads write into one cache line of y. */
  int64_t per = ((j->N + parts - 1) / parts + 15) / 16 * 16;
  int64_t r0 = per * t, r1 = r0 + per < j->N ? r0 + per : j->N;
  if (r0 < r1) run_rows(j, r0, r1);
}

static void *worker(void *arg) {
  int t = (int)(intptr_t)arg;
  uint64_t seen = 0;
  for (;;) {
    pthread_mutex_lock(&mu);
    while (generation == seen) pthread_cond_wait(&work_cv, &mu);
    seen = generation;
    job_t j = job;
    pthread_mutex_unlock(&mu);
    run_share(&j, t, nthreads);
    pthread_mutex_lock(&mu);
    if (--pending == 0) pthread_cond_signal(&done_cv);
    pthread_mutex_unlock(&mu);
  }
  return NULL;
}

static void start_pool(void) {
  int n = 0;
  const char *e = getenv("MEDTHINK_NATIVE_THREADS");
  if (e && *e) n = atoi(e);
  if (n <= 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (int)c : 1;
  }
  if (n > MAX_THREADS) n = MAX_THREADS;
  nthreads = 1;
  for (int t = 1; t < n; t++) {
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &attr, worker, (void *)(intptr_t)t) == 0) nthreads++;
    pthread_attr_destroy(&attr);
  }
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* Below this many weight values a product runs on the calling thread: waking workers costs tens of
 * microseconds, about the time such a product takes alone. */
#define PARALLEL_MIN (1 << 18)

/* One parallel call at a time (the pool has one job slot); calls come from JavaScript's thread, but a
 * program may load this from several workers. */
static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;

static void run(const job_t *j) {
  pthread_once(&once, start_pool);
  int64_t work = j->N * j->K * (j->glu ? 2 : 1);
  if (nthreads == 1 || work < PARALLEL_MIN || j->N < 32) {
    run_rows(j, 0, j->N);
    return;
  }
  pthread_mutex_lock(&call_mu);
  pthread_mutex_lock(&mu);
  job = *j;
  pending = nthreads - 1;
  generation++;
  pthread_cond_broadcast(&work_cv);
  pthread_mutex_unlock(&mu);
  run_share(j, 0, nthreads);
  pthread_mutex_lock(&mu);
  while (pending > 0) pthread_cond_wait(&done_cv, &mu);
  pthread_mutex_unlock(&mu);
  pthread_mutex_unlock(&call_mu);
}

/* ---------------------------------------------------------------------------------------------------- */
/* Exported. `kind` everywhere: -1 float32 weights, 0 bfloat16, 1 float16. */

/** Threads of the pool (starting it). */
int32_t medthink_gemv_threads(void) {
  pthread_once(&once, start_pool);
  return nthreads;
}

/** y[n] = sum_k W[n, k] x[k] for a float32 W [N, K] (row-major). */
void medthink_gemv_f32(const float *x, const float *W, float *y, int64_t N, int64_t K) {
  job_t j = {x, K, N, 1, 0, {{W, NULL, NULL, y, N, -1}}};
  run(&j);
}

/** The same for a 2-byte W [N, K] (kind 0: bfloat16, 1: float16), widened to float32 in registers. */
void medthink_gemv_half(const float *x, const uint16_t *W, float *y, int64_t N, int64_t K, int32_t kind) {
  job_t j = {x, K, N, 1, 0, {{W, NULL, NULL, y, N, kind ? 1 : 0}}};
  run(&j);
}

/** y = r + W x (a residual connection after a bias-free projection); W of `kind`. */
void medthink_gemv_add(const float *x, const void *W, int32_t kind, const float *r, float *y, int64_t N,
                       int64_t K) {
  job_t j = {x, K, N, 1, 0, {{W, NULL, r, y, N, kind}}};
  run(&j);
}

/** Three projections of one x with biases (null: none), in one parallel call: attention's q, k, v. */
void medthink_gemv3(const float *x, int64_t K, const void *W0, int32_t k0, const float *b0, float *y0,
                    int64_t N0, const void *W1, int32_t k1, const float *b1, float *y1, int64_t N1,
                    const void *W2, int32_t k2, const float *b2, float *y2, int64_t N2) {
  job_t j = {x, K, N0 + N1 + N2, 3, 0,
             {{W0, b0, NULL, y0, N0, k0}, {W1, b1, NULL, y1, N1, k1}, {W2, b2, NULL, y2, N2, k2}}};
  run(&j);
}

/** act[i] = silu((Wg x)[i]) * (Wu x)[i] for Wg, Wu [I, K]: SwiGLU's gate and up in one pass. */
void medthink_glu(const float *x, int64_t K, const void *Wg, int32_t kg, const void *Wu, int32_t ku,
                  float *act, int64_t I) {
  job_t j = {x, K, I, 2, 1, {{Wg, NULL, NULL, act, I, kg}, {Wu, NULL, NULL, NULL, I, ku}}};
  run(&j);
}

/** out = w * (x / sqrt(mean(x^2) + eps)) over K values (RMSNorm of one row), as the tf ops compute it:
 * the mean in float32, then x * rsqrt, then the weight. */
void medthink_rmsnorm(const float *x, const float *w, float eps, float *out, int64_t K) {
  float s = 0;
  for (int64_t k = 0; k < K; k++) s += x[k] * x[k];
  float r = 1.0f / sqrtf(s / (float)K + eps);
  for (int64_t k = 0; k < K; k++) out[k] = w[k] * (x[k] * r);
}

/** dst[i] = float32 of the 2-byte src[i] (kind 0: bfloat16, 1: float16): loading 2-byte checkpoints into
 * float32 host buffers. */
void medthink_widen(const uint16_t *src, float *dst, int64_t n, int32_t kind) {
  if (kind == 0)
    for (int64_t i = 0; i < n; i++) dst[i] = widen_bf16(src[i]);
  else
    for (int64_t i = 0; i < n; i++) dst[i] = widen_f16_scalar(src[i]);
}
