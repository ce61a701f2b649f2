// test_reference.c: the gold standard. Reads a reference file written by
// tools/make_reference.py (PyTorch, float64) and checks the C U-Net against it: output,
// loss, every parameter gradient, and 10 Adam steps (losses and final parameters).
//   usage: test_reference [FILE]   (default tests/ref_tiny.bin)
// Fails when, per tensor, max|err| / max|ref| exceeds 1e-4 (output) or 1e-3 (gradients),
// or a loss differs by more than 1e-4 relative. (Tensors whose true gradient is zero, e.g.
// the key bias of attention, are normalised by the largest gradient of the model instead.)
#include <stdint.h>
#include <string.h>

#include "train/adam.h"
#include "core/common.h"
#include "core/config.h"
#include "nn/layers.h"
#include "testutil.h"
#include "model/unet.h"

static FILE *ref_file;
static const char *ref_path;

static void rd(void *dst, size_t size, size_t n) {
    if (fread(dst, size, n, ref_file) != n) die("%s: truncated reference file", ref_path);
}
static int32_t rd_i32(void) { int32_t v; rd(&v, 4, 1); return v; }

static double max_abs(const float *x, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) if (fabs(x[i]) > m) m = fabs(x[i]);
    return m;
}
static double max_err(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) { double e = fabs((double)a[i] - b[i]); if (e > m) m = e; }
    return m;
}

int main(int argc, char **argv) {
    ref_path = argc > 1 ? argv[1] : "tests/ref_tiny.bin";
    ref_file = fopen(ref_path, "rb");
    if (!ref_file) die("%s: cannot open reference file", ref_path);
    if (rd_i32() != 0x52504444) die("%s: not a ddpm.c reference file (bad magic)", ref_path);
    if (rd_i32() != 1) die("%s: unsupported reference file version", ref_path);
    int32_t cfg_len = rd_i32();
    if (cfg_len <= 0 || cfg_len > 65536) die("%s: bad config length", ref_path);
    char *cfg_text = mallocCheck(cfg_len + 1);
    rd(cfg_text, 1, cfg_len);
    cfg_text[cfg_len] = 0;
    ModelConfig cfg;
    char err[300];
    if (config_parse(&cfg, cfg_text, ref_path, err, sizeof(err))) die("%s", err);
    int B = rd_i32(), C = rd_i32(), S = rd_i32(), n_steps = rd_i32();
    float lr;
    rd(&lr, 4, 1);
    if (C != cfg.im_channels || S != cfg.im_size || B <= 0 || n_steps < 0 || n_steps > 1000) die("%s: bad header", ref_path);

    Unet m;
    unet_build(&m, &cfg);
    int n_tensors = rd_i32();
    CHECK(n_tensors == m.n_tensors, "tensor count: reference %d, C model %d", n_tensors, m.n_tensors);
    if (n_tensors != m.n_tensors) TEST_DONE("test_reference");
    for (int i = 0; i < n_tensors; i++) {
        int len = rd_i32();
        char name[128] = {0};
        if (len <= 0 || len >= (int)sizeof(name)) die("%s: bad tensor name", ref_path);
        rd(name, 1, len);
        int numel = rd_i32();
        CHECK(!strcmp(name, m.tensors[i].name) && (size_t)numel == m.tensors[i].numel,
              "tensor %d: reference %s (%d), C %s (%zu)", i, name, numel, m.tensors[i].name, m.tensors[i].numel);
    }
    int64_t n_params;
    rd(&n_params, 8, 1);
    CHECK((size_t)n_params == m.n_params, "n_params: reference %lld, C %zu", (long long)n_params, m.n_params);
    if (tu_failures) TEST_DONE("test_reference");
    printf("%s: %d tensors, %lld parameters, batch %d, %dx%dx%d\n", ref_path, n_tensors, (long long)n_params, B, C, S, S);

    size_t nimg = (size_t)B * C * S * S, P = m.n_params;
    float *xt = mallocCheck(nimg * 4), *eps = mallocCheck(nimg * 4), *out_ref = mallocCheck(nimg * 4);
    float *grads_ref = mallocCheck(P * 4), *params_after = mallocCheck(P * 4), *losses = mallocCheck((n_steps + 1) * 4);
    float *dout = mallocCheck(nimg * 4);
    int *t = mallocCheck(B * sizeof(int));
    float loss_ref;
    rd(xt, 4, nimg);
    rd(t, 4, B);
    rd(eps, 4, nimg);
    rd(m.params, 4, P);
    rd(out_ref, 4, nimg);
    rd(&loss_ref, 4, 1);
    rd(grads_ref, 4, P);
    rd(losses, 4, n_steps);
    rd(params_after, 4, P);
    CHECK(fgetc(ref_file) == EOF, "%s: trailing bytes", ref_path);
    fclose(ref_file);

    // forward: output and loss
    unet_alloc_acts(&m, B, 1);
    double t0 = now_seconds();
    float *out = unet_forward(&m, xt, t, B);
    float loss = mse_forward(out, eps, nimg);
    double e_out = max_err(out, out_ref, nimg), s_out = max_abs(out_ref, nimg);
    printf("output  max|err| %.3e  / max|ref| %.3e = %.3e\n", e_out, s_out, e_out / s_out);
    CHECK(e_out / s_out <= 1e-4, "output normalised error %.3e > 1e-4", e_out / s_out);
    printf("loss    C %.9g  PyTorch %.9g  rel %.3e\n", loss, loss_ref, fabs(loss - loss_ref) / loss_ref);
    CHECK(fabs(loss - loss_ref) <= 1e-4 * loss_ref, "loss %.9g vs %.9g", loss, loss_ref);

    // backward: every parameter gradient
    unet_zero_grad(&m);
    mse_backward(dout, out, eps, nimg);
    unet_backward(&m, dout);
    printf("forward+backward %.3f s\n", now_seconds() - t0);
    double gmax = max_abs(grads_ref, P), worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < m.n_tensors; i++) {
        ParamTensor *p = &m.tensors[i];
        double e = max_err(m.grads + p->offset, grads_ref + p->offset, p->numel);
        double s = max_abs(grads_ref + p->offset, p->numel);
        double norm = s > 1e-6 * gmax ? s : gmax; // true-zero gradients: normalise by the model's scale
        double r = e / norm;
        if (r > worst) { worst = r; worst_name = p->name; }
        if (argc > 2 || r > 1e-3)
            printf("  %-52s max|err| %.3e  max|ref| %.3e  norm err %.3e%s\n", p->name, e, s, r, r > 1e-3 ? "  FAIL" : "");
        CHECK(r <= 1e-3, "gradient %s: normalised error %.3e > 1e-3", p->name, r);
    }
    printf("grads   worst normalised error %.3e (%s) over %d tensors\n", worst, worst_name, m.n_tensors);

    // 10 Adam steps on the same batch
    float *am = callocCheck(P, 4), *av = callocCheck(P, 4);
    AdamConfig ac = {lr, 0.9f, 0.999f, 1e-8f};
    double worst_loss = 0;
    for (int k = 0; k < n_steps; k++) {
        out = unet_forward(&m, xt, t, B);
        float l = mse_forward(out, eps, nimg);
        double rel = fabs(l - losses[k]) / losses[k];
        if (rel > worst_loss) worst_loss = rel;
        CHECK(rel <= 1e-4, "Adam step %d: loss %.9g vs PyTorch %.9g (rel %.3e)", k, l, losses[k], rel);
        unet_zero_grad(&m);
        mse_backward(dout, out, eps, nimg);
        unet_backward(&m, dout);
        adam_update(m.params, m.grads, am, av, P, k + 1, ac);
    }
    // Parameters whose true gradient is 0 (a bias followed by GroupNorm: max|grad| ~ 1e-17) move by
    // float noise amplified by Adam, up to lr per step in either implementation, whatever the
    // summation order: they are only held to Adam's bound n_steps lr. Every other parameter must
    // match PyTorch's to 2 lr.
    double e_par = 0, e_zero = 0;
    for (int i = 0; i < m.n_tensors; i++) {
        ParamTensor *p = &m.tensors[i];
        double e = max_err(m.params + p->offset, params_after + p->offset, p->numel);
        int zero_grad = max_abs(grads_ref + p->offset, p->numel) <= 1e-6 * gmax;
        if (zero_grad) e_zero = e > e_zero ? e : e_zero;
        else e_par = e > e_par ? e : e_par;
    }
    printf("adam    %d steps: worst loss rel err %.3e; params max|err| %.3e (%.3f x lr), zero-gradient params %.3f x lr\n",
           n_steps, worst_loss, e_par, e_par / lr, e_zero / lr);
    CHECK(e_par <= 2.0 * lr, "params after Adam: max error %.3e > 2 lr", e_par);
    CHECK(e_zero <= n_steps * lr, "zero-gradient params after Adam: max error %.3e > %d lr", e_zero, n_steps);
    free(am); free(av); free(xt); free(eps); free(out_ref); free(grads_ref); free(params_after);
    free(losses); free(dout); free(t); free(cfg_text);
    unet_free(&m);
    TEST_DONE("test_reference");
}
