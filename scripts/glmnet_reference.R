# Reference values of R glmnet for tests/glmnet/test_cv.py.
#
# Usage (from the repository root):
#   python scripts/make_glmnet_reference_data.py   # writes tests/data/glmnet/case-*_data.tsv
#   Rscript scripts/glmnet_reference.R             # writes the case-*_{path,coef,summary}.tsv
#
# For each case: cv.glmnet(x, y, alpha = 0.5, nfolds = n, grouped = FALSE) with the
# defaults (gaussian, standardize = TRUE, intercept = TRUE, nlambda = 100, lambda.min.ratio
# by n vs p) and a tight convergence threshold, so the reference is the exact optimum.
# Case "penaltyfactor" leaves its last column ("cov") unpenalised (penalty.factor 0).
suppressPackageStartupMessages(library(glmnet))

args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) > 0) args[1] else file.path("tests", "data", "glmnet")
thresh <- 1e-14

for (case in c("basic", "penaltyfactor", "wide")) {
  data <- read.delim(file.path(dir, sprintf("case-%s_data.tsv", case)))
  y <- data$y
  x <- as.matrix(data[, setdiff(names(data), "y")])
  n <- nrow(x)
  pf <- rep(1, ncol(x))
  if (case == "penaltyfactor") pf[ncol(x)] <- 0
  alpha <- 0.5
  fit <- glmnet(x, y, alpha = alpha, penalty.factor = pf, thresh = thresh, maxit = 1e7)
  cv <- cv.glmnet(x, y, alpha = alpha, penalty.factor = pf, nfolds = n, grouped = FALSE,
                  thresh = thresh, maxit = 1e7)
  stopifnot(isTRUE(all.equal(cv$lambda, fit$lambda)))
  write.table(data.frame(lambda = cv$lambda, cvm = cv$cvm, cvsd = cv$cvsd, nzero = cv$nzero),
              file.path(dir, sprintf("case-%s_path.tsv", case)), sep = "\t", quote = FALSE,
              row.names = FALSE)
  cmin <- as.matrix(coef(cv, s = "lambda.min"))
  c1se <- as.matrix(coef(cv, s = "lambda.1se"))
  write.table(data.frame(term = rownames(cmin), coef_lambda_min = cmin[, 1], coef_lambda_1se = c1se[, 1]),
              file.path(dir, sprintf("case-%s_coef.tsv", case)), sep = "\t", quote = FALSE,
              row.names = FALSE)
  beta <- as.matrix(fit$beta)
  write.table(data.frame(term = rownames(beta), beta),
              file.path(dir, sprintf("case-%s_betapath.tsv", case)), sep = "\t", quote = FALSE,
              row.names = FALSE, col.names = c("term", sprintf("l%03d", seq_len(ncol(beta)))))
  summary <- data.frame(
    key = c("alpha", "n", "p", "n_lambda", "lambda_min", "lambda_1se", "index_min", "index_1se",
            "glmnet_version", "R_version", "thresh"),
    value = c(alpha, n, ncol(x), length(cv$lambda), format(cv$lambda.min, digits = 17),
              format(cv$lambda.1se, digits = 17), cv$index[1], cv$index[2],
              as.character(packageVersion("glmnet")), R.version.string, thresh))
  write.table(summary, file.path(dir, sprintf("case-%s_summary.tsv", case)), sep = "\t", quote = FALSE,
              row.names = FALSE)
}
