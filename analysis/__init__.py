"""Analysis of squeeze studies: MLflow runs into pandas, EVP, tables and plots."""
