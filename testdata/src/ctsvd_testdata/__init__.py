"""Synthetic CT data for the suite's tests, benchmarks and demo, written as real DICOM.

- :mod:`~ctsvd_testdata.phantom`: a low-dose chest CT series with its exact ground truth
  (the demo series the pipeline runner writes);
- :mod:`~ctsvd_testdata.messy_exam`: an exam folder as a PACS or CD hands it over
  (localizers, reconstructions, six transfer syntaxes, broken files);
- :mod:`~ctsvd_testdata.hostile_exam`: a small exam built to trip a converter or an anonymizer;
- :mod:`~ctsvd_testdata.anon_tree`: the phantom as the anonymizer tests' nested input tree;
- :mod:`~ctsvd_testdata.lowdose`: a LoDoPaB-style low-dose simulation (radon, Poisson, FBP);
- :mod:`~ctsvd_testdata.conditions`: the denoising benchmark's harder test stacks;
- :mod:`~ctsvd_testdata.series_folders`: series folders as the stages hand them on (a volume and its
  manifest; factors and a local result), built without running the stages;
- :mod:`~ctsvd_testdata.dicom`, :mod:`~ctsvd_testdata.jpeg_lossless`: what the writers share;
- :mod:`~ctsvd_testdata.shared`: the real data beside a clone, in ``../shared``.
"""
