"""Show-o (the paper's second family): the unified model (`model`) over Phi and MAGVIT-v2 (`magvit`), its token
layout (`sequences`), attention masks (`masks`), mask-predict sampling and log-probs (`sampling`), judging
(`judge`), loading (`loading`), the offline factory (`factory`) and what a dry run checks (`dryrun`)."""
