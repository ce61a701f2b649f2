// commands.h: the ddpm commands, one per file in src/cli/. Each takes main's argc/argv
// (argv[1] is the command's name) and returns the exit status.
#ifndef DDPM_COMMANDS_H
#define DDPM_COMMANDS_H

int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_judge(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_export(int argc, char **argv);

#endif
