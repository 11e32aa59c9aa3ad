#include "spec_cost.h"

spec_cost_shape spec_cost_shape_of(const engine *e)
{
    const model_config *c = engine_config(e);
    const double ranks = engine_ranks(e), dim = c->dim, q_dim = (double)c->n_heads * c->head_dim,
                 kv_dim = (double)c->n_kv_heads * c->head_dim;
    const double ffn_mats = c->ffn == MODEL_FFN_SILU_GATED ? 3.0 : 2.0;
    const double per_layer = 2.0 * dim * q_dim + 2.0 * dim * kv_dim + ffn_mats * dim * c->ffn_dim;
    const double params = c->n_layers * per_layer + (double)c->vocab_size * dim;
    return (spec_cost_shape){ .weight_bytes = (double)engine_weight_bytes(e) / ranks,
                              .flops_per_token = 2.0 * params / ranks,
                              .regions = c->n_layers * SPEC_COST_REGIONS_PER_LAYER + 2 };
}

double spec_cost_step(const machine_profile *p, const spec_cost_shape *m, int n)
{
    const double stream = m->weight_bytes / (machine_profile_bandwidth(p, m->weight_bytes) * 1e9);
    const double compute = n * m->flops_per_token / (p->gflops * 1e9);
    return m->regions * p->region_us * 1e-6 + (stream > compute ? stream : compute);
}
