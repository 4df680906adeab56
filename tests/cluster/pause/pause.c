/* Minimal pod sandbox ("pause") process: no registry serves the upstream
 * image here. Holds the pod's namespaces, reaps zombies (it is PID 1 when the
 * pod shares its PID namespace) and exits cleanly on SIGTERM/SIGINT. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }

static void on_chld(int sig) {
  (void)sig;
  while (waitpid(-1, 0, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction term = {.sa_handler = on_term};
  struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGTERM, &term, 0);
  sigaction(SIGINT, &term, 0);
  sigaction(SIGCHLD, &chld, 0);
  for (;;) pause();
}
