// test_unet.c: whole-network checks on tiny configs: the analytic gradient of every parameter
// tensor (sampled elements) and of the network input path against central differences;
// the reference parameter count; determinism; batch independence.
#include <string.h>

#include "core/common.h"
#include "core/config.h"
#include "core/threads.h"
#include "nn/layers.h"
#include "testutil.h"
#include "model/unet.h"

// L = sum_i out_i R_i, accumulated in double
static double objective(Unet *m, const float *x, const float *t, const int *y, int B, const float *R, long n) {
    const float *out = unet_forward(m, x, t, y, B);
    double s = 0;
    for (long i = 0; i < n; i++) s += (double)out[i] * R[i];
    return s;
}

static void gradcheck(const char *cfg_path, int samples) {
    ModelConfig c;
    config_load(&c, cfg_path);
    Unet m;
    unet_build(&m, &c);
    Rng r;
    rng_seed(&r, 7);
    unet_init_params(&m, &r);
    // perturb GroupNorm affine params and zero biases away from their init so every term matters
    for (size_t i = 0; i < m.n_params; i++) m.params[i] += 0.05f * rng_normal(&r);
    int B = 2, D = c.im_channels * c.im_size * c.im_size;
    long n = (long)B * D;
    unet_alloc_acts(&m, B, 1);
    float *x = mallocCheck(n * 4), *R = mallocCheck(n * 4);
    float t[2] = {3, 917.25f}; // a fractional timestep too
    int y[2] = {1, c.num_classes}; // a class and the null label (class-conditional configs)
    rng_fill_normal(&r, x, n);
    rng_fill_normal(&r, R, n);
    objective(&m, x, t, y, B, R, n);
    unet_zero_grad(&m);
    unet_backward(&m, R);
    float *g = mallocCheck(m.n_params * 4);
    memcpy(g, m.grads, m.n_params * 4);
    double gscale = 0;
    for (size_t i = 0; i < m.n_params; i++) gscale = fmax(gscale, fabs(g[i]));
    int checked = 0, bad = 0;
    double worst = 0;
    for (int k = 0; k < m.n_tensors; k++) {
        ParamTensor *p = &m.tensors[k];
        for (int s = 0; s < samples; s++) {
            size_t i = p->offset + (s == 0 ? 0 : rng_below(&r, (uint32_t)p->numel));
            float orig = m.params[i];
            double h = 1e-2 * fmax(1.0, fabs(orig));
            m.params[i] = orig + (float)h;
            double lp = objective(&m, x, t, y, B, R, n);
            m.params[i] = orig - (float)h;
            double lm = objective(&m, x, t, y, B, R, n);
            m.params[i] = orig;
            double num = (lp - lm) / (2 * h);
            // float32 forward: central differences carry ~1e-6 |L| / h of noise, plus O(h^2)
            double err = fabs(num - g[i]) / fmax(fabs(num), 1e-2 * gscale);
            if (err > worst) worst = err;
            if (err > 2e-2) {
                bad++;
                if (bad < 10) fprintf(stderr, "  %s[%zu]: analytic %.6g numeric %.6g\n", p->name, i - p->offset, g[i], num);
            }
            checked++;
        }
    }
    printf("%s: %zu params, %d sampled gradients, worst relative error %.2e\n", cfg_path, m.n_params, checked, worst);
    CHECK(bad == 0, "%s: %d of %d gradient samples off by more than 2%%", cfg_path, bad, checked);

    // determinism: same inputs, same bits; batch independence: image 1 alone == image 1 in the batch
    float *o1 = mallocCheck(n * 4);
    memcpy(o1, unet_forward(&m, x, t, y, B), n * 4);
    const float *o2 = unet_forward(&m, x, t, y, B);
    CHECK(!memcmp(o1, o2, n * 4), "forward is not deterministic");
    const float *o3 = unet_forward(&m, x + D, t + 1, y + 1, 1);
    double d = 0;
    for (int i = 0; i < D; i++) d = fmax(d, fabs(o3[i] - o1[D + i]));
    CHECK(d < 1e-5, "image 1 alone differs from image 1 in a batch by %.3g", d);
    free(x); free(R); free(g); free(o1);
    unet_free(&m);
}

// The layer workspace has one region per thread: activations allocated while 1 thread was set
// must grow when the thread count rises (else the layers write past the workspace), and the
// result must equal a model allocated for 2 threads from the start.
static void test_workspace_threads(void) {
    ModelConfig c;
    config_load(&c, "tests/cfg/mini28.cfg");
    Unet a, b;
    unet_build(&a, &c);
    unet_build(&b, &c);
    Rng r;
    rng_seed(&r, 5);
    unet_init_params(&a, &r);
    memcpy(b.params, a.params, a.n_params * sizeof(float));
    int B = 4, D = c.im_channels * c.im_size * c.im_size;
    float t[4] = {1, 200, 500, 999};
    float *x = mallocCheck((size_t)B * D * sizeof(float)), *o = mallocCheck((size_t)B * D * sizeof(float));
    rng_fill_normal(&r, x, (long)B * D);
    set_threads(1);
    unet_alloc_acts(&a, B, 1);
    CHECK(a.ws_threads == 1, "workspace for %d threads after allocating with 1", a.ws_threads);
    set_threads(2);
    unet_alloc_acts(&a, B, 1); // same batch: must still grow the workspace for 2 threads
    CHECK(a.ws_threads == 2, "workspace for %d threads after set_threads(2) + unet_alloc_acts", a.ws_threads);
    unet_alloc_acts(&b, B, 1);
    memcpy(o, unet_forward(&a, x, t, NULL, B), (size_t)B * D * sizeof(float));
    CHECK(!memcmp(o, unet_forward(&b, x, t, NULL, B), (size_t)B * D * sizeof(float)),
          "forward after growing the workspace differs from a model allocated for 2 threads");
    set_threads(1);
    unet_alloc_acts(&a, B, 1); // fewer threads: the larger workspace is kept
    CHECK(a.ws_threads == 2, "workspace shrank to %d threads", a.ws_threads);
    free(x); free(o);
    unet_free(&a);
    unet_free(&b);
}

int main(void) {
    ModelConfig c;
    Unet m;
    config_load(&c, "models/reference.cfg");
    unet_build(&m, &c);
    CHECK(m.n_params == 10188081, "models/reference.cfg: %zu parameters, want 10188081", m.n_params);
    CHECK(m.n_tensors == 330, "models/reference.cfg: %d tensors, want 330", m.n_tensors);
    double gflop = 2e-9 * unet_forward_macs(&m);
    CHECK(fabs(gflop - 1.94) < 0.01, "reference forward GFLOP %.4f, want about 1.94 (2 x the U-Net's multiply-adds)", gflop);
    unet_free(&m);
    config_load(&c, "models/small.cfg");
    unet_build(&m, &c);
    CHECK(m.n_params == 1052337, "models/small.cfg: %zu parameters, want 1052337 (PyTorch count)", m.n_params);
    unet_free(&m);
    gradcheck("models/tiny.cfg", 6);
    gradcheck("tests/cfg/mini28.cfg", 2);
    gradcheck("tests/cfg/tiny_edm_cond.cfg", 4); // the class embedding (a class and the null label)
    test_workspace_threads();
    TEST_DONE("test_unet");
}
