// cli_judge.h: the 'ddpm judge' (train the MNIST classifier) and 'ddpm eval' (score samples) commands.
#ifndef DDPM_CLI_JUDGE_H
#define DDPM_CLI_JUDGE_H

int cmd_judge(int argc, char **argv); // argv[1] = "judge"; returns the exit status
int cmd_eval(int argc, char **argv);  // argv[1] = "eval"

#endif
