"""Ray at the edges: ``ray_init`` (start or join Ray), ``sampling`` (Ray Data sharded, resumable
sampling), ``actors`` (long-lived SamplerActor pool in a placement group), ``metrics`` and
``evaluate`` (accuracy, maj@k, pass@k; ``raysys eval``). Import the submodules directly: this
package imports nothing heavy."""
