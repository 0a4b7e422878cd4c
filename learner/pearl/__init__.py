"""PEARL (Rakelly et al. 2019) on the same layout as ``learner/sac``.

```
 per-task RL buffers ─► MetaBatch [T, B]          per-task encoder buffers ─► context [T, C]
                            │                                   │ encoder (context.py, networks.py)
                            │                    factors (mu, var) [T, C, Z] ─► product of Gaussians
                            │                                   │ q(z|c) [T, Z] ─► KL(q || N(0, I))
                            ▼                                   ▼ z ~ q(z|c)
                losses.py: critic(s, a, z) trains the encoder; value(s, z-) and actor(s, z-)
                            │
                 update.py: one Adam step, Polyak on the target value net, save/load
```

config.py (hyperparameters, per-family table, collection schedule), context.py (pure
posterior maths), networks.py (encoder, the SAC modules on z, inference copies),
losses.py, update.py, buffers.py (per-task device buffers).
"""
