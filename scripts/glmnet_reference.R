# Reference values of R glmnet for tests/glmnet/test_cv.py.
#
# Usage (from the repository root):
#   python scripts/make_glmnet_reference_data.py [CASE ...]   # writes tests/data/glmnet/case-*_data.tsv
#   Rscript scripts/glmnet_reference.R [DIR [CASE ...]]        # writes the case-*_{path,coef,betapath,summary}.tsv
# (every case, or only those named). The fold ratio and nested cases were made with
#   Rscript scripts/glmnet_reference.R tests/data/glmnet foldratio-loo foldratio-kfold nested-outer nested-inner
# (R 4.2.2, glmnet 4.1.6 from Debian bookworm: apt-get install r-base-core r-cran-glmnet).
#
# For each case: cv.glmnet(x, y, alpha = 0.5, nfolds = n, grouped = FALSE) with the
# defaults (gaussian, standardize = TRUE, intercept = TRUE, nlambda = 100, lambda.min.ratio
# by n vs p) and a tight convergence threshold, so the reference is the exact optimum.
# Case "penaltyfactor" leaves its last column ("cov") unpenalised (penalty.factor 0).
# A case with a case-<name>_foldid.tsv is cross-validated on those folds (foldid) instead of
# leave-one-out. The "foldratio" cases have folds with fewer subjects than predictors while the
# full data have at least as many: cv.glmnet calls glmnet on each fold with lambda = NULL, so the
# fold takes lambda.min.ratio 1e-2 from its own nobs, the full data 1e-4; they are also
# cross-validated with lambda.min.ratio = 1e-4 given (then every fold's path uses it):
# case-<name>_ratio1e-4_{path,summary}.tsv.
# The "nested" cases are the K-fold nested cross-validation of ptsd_bidsapp.glmnet.nested_cv:
# for each outer fold f (case-<name>_folds.tsv: outer, inner_f), cv.glmnet(grouped = FALSE) on the
# outer training set with foldid inner_f, and the held-out subjects predicted at its lambda.min:
# case-<name>_nested.tsv (per subject) and case-<name>_nestedfolds.tsv (per outer fold).
suppressPackageStartupMessages(library(glmnet))

args <- commandArgs(trailingOnly = TRUE)
dir <- if (length(args) > 0) args[1] else file.path("tests", "data", "glmnet")
all_cases <- c("basic", "penaltyfactor", "wide", "foldratio-loo", "foldratio-kfold", "nested-outer", "nested-inner")
cases <- if (length(args) > 1) args[-1] else all_cases
stopifnot(all(cases %in% all_cases))
thresh <- 1e-14

write_path <- function(cv, prefix) {
  write.table(data.frame(lambda = cv$lambda, cvm = cv$cvm, cvsd = cv$cvsd, nzero = cv$nzero),
              file.path(dir, sprintf("%s_path.tsv", prefix)), sep = "\t", quote = FALSE, row.names = FALSE)
}

nested_reference <- function(case) {
  data <- read.delim(file.path(dir, sprintf("case-%s_data.tsv", case)))
  folds <- read.delim(file.path(dir, sprintf("case-%s_folds.tsv", case)))
  y <- data$y
  x <- as.matrix(data[, setdiff(names(data), "y")])
  predicted <- rep(NA_real_, nrow(x))
  per_fold <- NULL
  for (f in seq_len(max(folds$outer))) {
    train <- folds$outer != f
    cv <- cv.glmnet(x[train, , drop = FALSE], y[train], alpha = 0.5, foldid = folds[[sprintf("inner_%d", f)]][train],
                    grouped = FALSE, thresh = thresh, maxit = 1e7)
    predicted[!train] <- predict(cv, x[!train, , drop = FALSE], s = "lambda.min")[, 1]
    per_fold <- rbind(per_fold, data.frame(outer = f, n_train = sum(train), n_lambda = length(cv$lambda),
                                           lambda_min = format(cv$lambda.min, digits = 17),
                                           index_min = cv$index[1]))
  }
  write.table(data.frame(outer = folds$outer, predicted = format(predicted, digits = 17)),
              file.path(dir, sprintf("case-%s_nested.tsv", case)), sep = "\t", quote = FALSE, row.names = FALSE)
  write.table(per_fold, file.path(dir, sprintf("case-%s_nestedfolds.tsv", case)), sep = "\t", quote = FALSE,
              row.names = FALSE)
}

for (case in cases) {
  if (startsWith(case, "nested")) {
    nested_reference(case)
    next
  }
  data <- read.delim(file.path(dir, sprintf("case-%s_data.tsv", case)))
  y <- data$y
  x <- as.matrix(data[, setdiff(names(data), "y")])
  n <- nrow(x)
  pf <- rep(1, ncol(x))
  if (case == "penaltyfactor") pf[ncol(x)] <- 0
  alpha <- 0.5
  fit <- glmnet(x, y, alpha = alpha, penalty.factor = pf, thresh = thresh, maxit = 1e7)
  foldid_file <- file.path(dir, sprintf("case-%s_foldid.tsv", case))
  foldid <- if (file.exists(foldid_file)) read.delim(foldid_file)$foldid else NULL
  if (!is.null(foldid)) {
    cv <- cv.glmnet(x, y, alpha = alpha, penalty.factor = pf, foldid = foldid, grouped = FALSE,
                    thresh = thresh, maxit = 1e7)
  } else {
    cv <- cv.glmnet(x, y, alpha = alpha, penalty.factor = pf, nfolds = n, grouped = FALSE,
                    thresh = thresh, maxit = 1e7)
  }
  stopifnot(isTRUE(all.equal(cv$lambda, fit$lambda)))
  write_path(cv, sprintf("case-%s", case))
  if (startsWith(case, "foldratio")) {
    given <- cv.glmnet(x, y, alpha = alpha, penalty.factor = pf, grouped = FALSE, lambda.min.ratio = 1e-4,
                       foldid = if (is.null(foldid)) seq_len(n) else foldid, thresh = thresh, maxit = 1e7)
    write_path(given, sprintf("case-%s_ratio1e-4", case))
    write.table(data.frame(key = c("lambda_min", "lambda_1se", "index_min", "index_1se"),
                           value = c(format(given$lambda.min, digits = 17), format(given$lambda.1se, digits = 17),
                                     given$index[1], given$index[2])),
                file.path(dir, sprintf("case-%s_ratio1e-4_summary.tsv", case)), sep = "\t", quote = FALSE,
                row.names = FALSE)
  }
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
