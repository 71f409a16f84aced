"""Training: what a run is (its spec), what it is fed (in memory or streamed), batches and augmentation, the fit
loop with checkpoints and resume, memory estimates, data-parallel placement and composite pretraining."""
