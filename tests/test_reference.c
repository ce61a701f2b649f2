// test_reference.c: the gold standard. Reads reference files written by
// tools/make_reference.py (PyTorch, float64) and checks the C U-Net against them: output,
// loss, every parameter gradient, and 10 Adam steps (losses and final parameters).
// Version 1 files: eps-prediction MSE on given x_t and integer t. Version 2: the training
// objective of the file's config (diffusion/objective.h: v, EDM, Min-SNR weights, fractional t,
// class labels), whose inputs, targets and weights the C code computes from x0, eps and sigma.
//   usage: test_reference [FILE...]   (default: tests/ref_tiny.bin and the version 2 files)
// Fails when, per tensor, max|err| / max|ref| exceeds 1e-4 (output) or 1e-3 (gradients),
// or a loss differs by more than 1e-4 relative. (Tensors whose true gradient is zero, e.g.
// the key bias of attention, are normalised by the largest gradient of the model instead.)
#include <stdint.h>
#include <string.h>

#include "diffusion/objective.h"
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

// the loss of the file's version and its gradient dout
static float ref_loss(int version, const float *out, const float *target, const double *w, int B, size_t nimg,
                      float *dout) {
    if (version == 1) {
        if (dout) mse_backward(dout, out, target, (long)nimg);
        return mse_forward(out, target, (long)nimg);
    }
    int D = (int)(nimg / B);
    double row[64];
    if (B > 64) die("reference batch %d > 64", B);
    if (dout) objective_loss_backward(dout, out, target, w, B, D, (long)nimg);
    return (float)objective_loss(out, target, w, B, D, row);
}

static void check_file(const char *path, int verbose) {
    ref_path = path;
    ref_file = fopen(ref_path, "rb");
    if (!ref_file) die("%s: cannot open reference file", ref_path);
    if (rd_i32() != 0x52504444) die("%s: not a ddpm.c reference file (bad magic)", ref_path);
    int version = rd_i32();
    if (version != 1 && version != 2) die("%s: unsupported reference file version %d", ref_path, version);
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
    if (n_tensors != m.n_tensors) return;
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
    if (tu_failures) return;
    printf("%s: version %d, objective %s, %d classes, %d tensors, %lld parameters, batch %d, %dx%dx%d\n", ref_path,
           version, objective_name(cfg.objective), cfg.num_classes, n_tensors, (long long)n_params, B, C, S, S);

    size_t nimg = (size_t)B * C * S * S, P = m.n_params;
    float *xt = mallocCheck(nimg * 4), *eps = mallocCheck(nimg * 4), *out_ref = mallocCheck(nimg * 4);
    float *grads_ref = mallocCheck(P * 4), *params_after = mallocCheck(P * 4), *losses = mallocCheck((n_steps + 1) * 4);
    float *dout = mallocCheck(nimg * 4);
    float *t = mallocCheck(B * sizeof(float)), *target = mallocCheck(nimg * 4);
    double *sigma = mallocCheck(B * sizeof(double)), *w = mallocCheck(B * sizeof(double));
    int *y = NULL;
    float loss_ref;
    if (version == 1) { // x_t, integer t, eps: the target is eps
        int *ti = mallocCheck(B * sizeof(int));
        rd(xt, 4, nimg);
        rd(ti, 4, B);
        rd(eps, 4, nimg);
        for (int b = 0; b < B; b++) t[b] = (float)ti[b];
        free(ti);
        memcpy(target, eps, nimg * 4);
    } else { // x0, eps, t, sigma, y: the objective makes the input, target and weights
        float *x0 = mallocCheck(nimg * 4);
        y = mallocCheck(B * sizeof(int));
        rd(x0, 4, nimg);
        rd(eps, 4, nimg);
        rd(t, 4, B);
        rd(sigma, 8, B);
        rd(y, 4, B);
        Schedule sch;
        schedule_init(&sch, &cfg);
        for (int b = 0; b < B; b++) { // the file's noise levels are those of its timesteps
            double want = t[b] == (float)(int)t[b] ? schedule_sigma(&sch, (int)t[b]) : t_to_sigma(&sch, t[b]);
            CHECK(fabs(sigma[b] - want) <= 1e-9 * want, "image %d: sigma %.12g, C's level of t = %.9g is %.12g", b,
                  sigma[b], t[b], want);
        }
        objective_batch(&cfg, &sch, x0, eps, t, sigma, B, (int)(nimg / B), xt, target);
        for (int b = 0; b < B; b++) w[b] = loss_weight(&cfg, sigma[b]);
        schedule_free(&sch);
        free(x0);
    }
    if (cfg.num_classes == 0) { free(y); y = NULL; }
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
    float *out = unet_forward(&m, xt, t, y, B);
    float loss = ref_loss(version, out, target, w, B, nimg, NULL);
    double e_out = max_err(out, out_ref, nimg), s_out = max_abs(out_ref, nimg);
    printf("output  max|err| %.3e  / max|ref| %.3e = %.3e\n", e_out, s_out, e_out / s_out);
    CHECK(e_out / s_out <= 1e-4, "output normalised error %.3e > 1e-4", e_out / s_out);
    printf("loss    C %.9g  PyTorch %.9g  rel %.3e\n", loss, loss_ref, fabs(loss - loss_ref) / loss_ref);
    CHECK(fabs(loss - loss_ref) <= 1e-4 * loss_ref, "loss %.9g vs %.9g", loss, loss_ref);

    // backward: every parameter gradient
    unet_zero_grad(&m);
    ref_loss(version, out, target, w, B, nimg, dout);
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
        if (verbose || r > 1e-3)
            printf("  %-52s max|err| %.3e  max|ref| %.3e  norm err %.3e%s\n", p->name, e, s, r, r > 1e-3 ? "  FAIL" : "");
        CHECK(r <= 1e-3, "gradient %s: normalised error %.3e > 1e-3", p->name, r);
    }
    printf("grads   worst normalised error %.3e (%s) over %d tensors\n", worst, worst_name, m.n_tensors);

    // 10 Adam steps on the same batch
    float *am = callocCheck(P, 4), *av = callocCheck(P, 4);
    AdamConfig ac = {lr, 0.9f, 0.999f, 1e-8f};
    double worst_loss = 0;
    for (int k = 0; k < n_steps; k++) {
        out = unet_forward(&m, xt, t, y, B);
        float l = ref_loss(version, out, target, w, B, nimg, NULL);
        double rel = fabs(l - losses[k]) / losses[k];
        if (rel > worst_loss) worst_loss = rel;
        CHECK(rel <= 1e-4, "Adam step %d: loss %.9g vs PyTorch %.9g (rel %.3e)", k, l, losses[k], rel);
        unet_zero_grad(&m);
        ref_loss(version, out, target, w, B, nimg, dout);
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
    free(losses); free(dout); free(t); free(cfg_text); free(target); free(sigma); free(w); free(y);
    unet_free(&m);
}

int main(int argc, char **argv) {
    static const char *files[] = {"tests/ref_tiny.bin", "tests/ref_tiny_v.bin", "tests/ref_tiny_edm_cond.bin",
                                  "tests/ref_tiny_eps_lognormal.bin"};
    int verbose = argc > 1 && !strcmp(argv[argc - 1], "-v");
    int nf = argc - 1 - verbose;
    if (nf > 0)
        for (int i = 1; i <= nf; i++) check_file(argv[i], verbose);
    else
        for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) check_file(files[i], verbose);
    TEST_DONE("test_reference");
}
