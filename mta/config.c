/* mta/config.c: placeholder, being written */
typedef int placeholder_config;
