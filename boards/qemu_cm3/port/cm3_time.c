// qemu_cm3 (cellmqtt): the port half of the time module (included by extmod/modtime.c): time() and
// gmtime()/localtime() from the host's clock read once at boot (semihosting SYS_TIME) plus the uptime
// (the CMSDK timer 0 time base, cm3_hal.c) -- the RTC stand-in. ticks_*/sleep_* come from mp_hal (cm3_hal.c).
#include "shared/timeutils/timeutils.h"

uint32_t cm3_epoch_s(void);

static mp_obj_t mp_time_time_get(void) {
    return mp_obj_new_int_from_uint(cm3_epoch_s());
}

static mp_obj_t mp_time_localtime_get(void) {
    timeutils_struct_time_t tm;
    timeutils_seconds_since_epoch_to_struct_time(cm3_epoch_s(), &tm);
    mp_obj_t t[8] = {
        mp_obj_new_int(tm.tm_year), mp_obj_new_int(tm.tm_mon), mp_obj_new_int(tm.tm_mday),
        mp_obj_new_int(tm.tm_hour), mp_obj_new_int(tm.tm_min), mp_obj_new_int(tm.tm_sec),
        mp_obj_new_int(tm.tm_wday), mp_obj_new_int(tm.tm_yday),
    };
    return mp_obj_new_tuple(8, t);
}
