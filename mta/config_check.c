/* mta/config_check.c: placeholder, being written */
typedef int placeholder_config_check;
