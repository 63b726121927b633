/* Calls a VixDiskLibGenericLogFunc with a real va_list, as VDDK does. */
#include <stdarg.h>

typedef void FakeVddkLogFunc(const char *fmt, va_list args);

void fake_vddk_log(FakeVddkLogFunc *sink, const char *fmt, ...)
{
   va_list ap;
   va_start(ap, fmt);
   sink(fmt, ap);
   va_end(ap);
}
